// Draws the app's icons as PNGs (no image files are committed or downloaded): a white map pin with a
// parcel on a teal tile. Pure Node: a 4x4-supersampled rasteriser and a minimal PNG encoder (zlib).
import { deflateSync, crc32 } from "node:zlib";

const TEAL = [15, 118, 110];
const WHITE = [255, 255, 255];

function insidePin(x, y) {
  // x, y in [0, 1]: a circle head, a triangle down to the tip, a square "parcel" hole.
  const dx = x - 0.5, dy = y - 0.42;
  const head = dx * dx + dy * dy <= 0.2 * 0.2;
  const t = (y - 0.5) / (0.82 - 0.5);
  const body = t >= 0 && t <= 1 && Math.abs(x - 0.5) <= 0.175 * (1 - t);
  const hole = Math.abs(dx) <= 0.085 && Math.abs(dy) <= 0.085;
  return (head || body) && !hole;
}

function insideTile(x, y, radius) {
  const cx = Math.min(Math.max(x, radius), 1 - radius), cy = Math.min(Math.max(y, radius), 1 - radius);
  return (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius;
}

/** RGBA pixels of one icon; `maskable` fills the square and keeps the pin inside the 80% safe zone. */
function draw(size, maskable) {
  const px = Buffer.alloc(size * size * 4);
  const scale = maskable ? 0.75 : 1;
  const S = 4;
  for (let j = 0; j < size; j++) {
    for (let i = 0; i < size; i++) {
      let tile = 0, pin = 0;
      for (let sj = 0; sj < S; sj++) {
        for (let si = 0; si < S; si++) {
          const x = (i + (si + 0.5) / S) / size, y = (j + (sj + 0.5) / S) / size;
          if (maskable || insideTile(x, y, 0.22)) tile++;
          if (insidePin(0.5 + (x - 0.5) / scale, 0.5 + (y - 0.5) / scale)) pin++;
        }
      }
      const a = pin / (S * S), o = (j * size + i) * 4;
      for (let c = 0; c < 3; c++) px[o + c] = Math.round(TEAL[c] * (1 - a) + WHITE[c] * a);
      px[o + 3] = Math.round((255 * tile) / (S * S));
    }
  }
  return px;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

export function png(size, maskable = false) {
  const px = draw(size, maskable);
  const raw = Buffer.alloc((size * 4 + 1) * size);
  for (let j = 0; j < size; j++) {
    raw[j * (size * 4 + 1)] = 0; // filter: none
    px.copy(raw, j * (size * 4 + 1) + 1, j * size * 4, (j + 1) * size * 4);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
