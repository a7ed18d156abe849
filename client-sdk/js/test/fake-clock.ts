/**
 * A fake clock for the sync loop's timers: `setTimeout` and `Date` are faked, `setImmediate`
 * is not, so fake-indexeddb (which schedules with `setImmediate`) keeps working while the
 * test decides when time passes. Time moves in small steps, with the event loop drained
 * between them, so what the client does between timers happens "at once".
 */
import { vi } from "vitest";

export function useFakeClock(): void {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
}

/** Let IndexedDB requests and promise chains run without moving the clock. */
export async function drain(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

/** Move the fake clock `ms` forward in steps of `stepMs`, draining the event loop after each. */
export async function advance(ms: number, stepMs = 10): Promise<void> {
  const end = Date.now() + ms;
  await drain();
  while (Date.now() < end) {
    await vi.advanceTimersByTimeAsync(Math.min(stepMs, end - Date.now()));
    await drain();
  }
}

/** Move the fake clock until `check` holds; fail when `budgetMs` of fake time passed first. */
export async function advanceUntil(check: () => boolean | Promise<boolean>, budgetMs: number, stepMs = 10): Promise<void> {
  const end = Date.now() + budgetMs;
  for (;;) {
    await drain();
    if (await check()) return;
    if (Date.now() >= end) throw new Error(`condition not met within ${budgetMs} ms of fake time`);
    await vi.advanceTimersByTimeAsync(stepMs);
  }
}

/** Move the fake clock until `promise` settles (a `close()` whose sockets close on timers); its value. */
export async function settle<T>(promise: Promise<T>, budgetMs = 5_000): Promise<T> {
  let done = false;
  const watched = promise.finally(() => {
    done = true;
  });
  watched.catch(() => undefined);
  await advanceUntil(() => done, budgetMs);
  return watched;
}
