/** Laws of the text layer, for any Unicode text (fast-check). */
import fc from "fast-check";
import { describe, expect, it } from "vitest";

import * as text from "../src/text.js";

const unicode = fc.string({ unit: "binary", maxLength: 12 });

/** `s` with `del` code points deleted at code point `pos`, then `insert` inserted there. */
function spliceCodePoints(s: string, pos: number, del: number, insert: string): string {
  const cps = [...s];
  cps.splice(pos, del, ...insert);
  return cps.join("");
}

const edit = (base: string) =>
  fc.nat({ max: [...base].length }).chain((pos) =>
    fc.tuple(fc.constant(pos), fc.nat({ max: [...base].length - pos }), unicode),
  );

describe("text", () => {
  it("an edit at code point positions equals the same splice of code points", () => {
    fc.assert(
      fc.property(unicode.chain((base) => fc.tuple(fc.constant(base), edit(base))), ([base, [pos, del, insert]]) => {
        const state = text.applyUpdate(undefined, text.splice(undefined, 0, 0, base));
        const update = text.splice(state, pos, del, insert);
        expect(text.value(text.applyUpdate(state, update))).toBe(spliceCodePoints(base, pos, del, insert));
      }),
    );
  });

  it("concurrent edits merge to the same text in either order, and replaying one changes nothing", () => {
    fc.assert(
      fc.property(
        unicode.chain((base) => fc.tuple(fc.constant(base), edit(base), edit(base))),
        ([base, [p1, d1, i1], [p2, d2, i2]]) => {
          const state = text.applyUpdate(undefined, text.splice(undefined, 0, 0, base));
          const a = text.splice(state, p1, d1, i1);
          const b = text.splice(state, p2, d2, i2);
          const ab = text.applyUpdate(text.applyUpdate(state, a), b);
          const ba = text.applyUpdate(text.applyUpdate(state, b), a);
          expect(text.value(ab)).toBe(text.value(ba));
          expect(text.value(text.applyUpdate(ab, a))).toBe(text.value(ab));
        },
      ),
    );
  });

  it("an edit built on an edit this state lacks is refused whole, and taken once the first arrived", () => {
    fc.assert(
      fc.property(
        unicode.filter((s) => s.length > 0),
        unicode,
        (first, second) => {
          const one = text.splice(undefined, 0, 0, first);
          const afterOne = text.applyUpdate(undefined, one);
          const two = text.splice(afterOne, [...first].length, 0, second); // inserts after `first`
          const three = text.splice(text.applyUpdate(afterOne, two), 0, 1, ""); // deletes from `first`
          expect(() => text.applyUpdate(undefined, three)).toThrow(text.InvalidTextUpdate);
          if (second) expect(() => text.applyUpdate(undefined, two)).toThrow(text.InvalidTextUpdate);
          expect(text.value(text.applyUpdate(text.applyUpdate(afterOne, two), three))).toBe(
            spliceCodePoints(first + second, 0, 1, ""),
          );
        },
      ),
    );
  });
});
