import { describe, expect, it } from "vitest";
import { MemberArena } from "./member-arena.js";

describe("MemberArena", () => {
  it("member arena - chunks do not overlap, released chunks are reused by size, and growth keeps the data", () => {
    const arena = new MemberArena();
    const chunks: { offset: number; log2: number }[] = [];
    for (let i = 0; i < 3000; i++) {
      const log2 = i % 5;
      const offset = arena.alloc(log2);
      for (let s = 0; s < 1 << log2; s++) {
        arena.workers[offset + s] = i;
        arena.stamps[offset + s] = i + 0.5;
      }
      chunks.push({ offset, log2 });
    }
    // The arrays grew past their first 4096 slots; every chunk still holds its own values.
    expect(arena.workers.length).toBeGreaterThan(4096);
    chunks.forEach(({ offset, log2 }, i) => {
      for (let s = 0; s < 1 << log2; s++) {
        expect(arena.workers[offset + s]).toBe(i);
        expect(arena.stamps[offset + s]).toBe(i + 0.5);
      }
    });
    const used = arena.usedSlots;
    const freed = chunks.filter(({ log2 }) => log2 === 3).slice(0, 10);
    for (const { offset, log2 } of freed) arena.release(offset, log2);
    const again = Array.from({ length: 10 }, () => arena.alloc(3));
    expect(new Set(again)).toEqual(new Set(freed.map(({ offset }) => offset)));
    expect(arena.usedSlots).toBe(used);
    // Another size does not take them: it comes from the top.
    expect(arena.alloc(2)).toBe(used);
  });

  it("member arena - move copies workers and stamps between chunks", () => {
    const arena = new MemberArena();
    const from = arena.alloc(2);
    for (let s = 0; s < 4; s++) {
      arena.workers[from + s] = 10 + s;
      arena.stamps[from + s] = 100 + s;
    }
    const to = arena.alloc(3);
    arena.move(from, to, 4);
    expect([...arena.workers.subarray(to, to + 4)]).toEqual([10, 11, 12, 13]);
    expect([...arena.stamps.subarray(to, to + 4)]).toEqual([100, 101, 102, 103]);
  });

  it("member arena - without stamps, workers still move and grow and no stamp memory is held", () => {
    const arena = new MemberArena(false);
    const chunks = Array.from({ length: 2000 }, (_, i) => {
      const offset = arena.alloc(2);
      for (let s = 0; s < 4; s++) arena.workers[offset + s] = i * 4 + s;
      return offset;
    });
    const to = arena.alloc(3);
    arena.move(chunks[7] as number, to, 4);
    expect([...arena.workers.subarray(to, to + 4)]).toEqual([28, 29, 30, 31]);
    expect(arena.workers.length).toBeGreaterThan(4096);
    expect(arena.stamps.length).toBe(0);
    chunks.forEach((offset, i) => {
      expect(arena.workers[offset + 3]).toBe(i * 4 + 3);
    });
  });
});
