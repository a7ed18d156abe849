/** A promise-based flag: `wait` resolves true when `set`, false after the timeout. */
export class Signal {
  private flag = false;
  private waiters: ((v: boolean) => void)[] = [];

  set(): void {
    this.flag = true;
    for (const w of this.waiters.splice(0)) w(true);
  }

  clear(): void {
    this.flag = false;
  }

  get isSet(): boolean {
    return this.flag;
  }

  wait(ms: number): Promise<boolean> {
    if (this.flag) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(false);
      }, ms);
      const done = (v: boolean): void => {
        clearTimeout(timer);
        resolve(v);
      };
      this.waiters.push(done);
    });
  }
}
