// Builds a known heap and writes a V8 heap snapshot of it: `node make-heap.js OUT.heapsnapshot [N]`.
// With N, also keeps N small objects with properties (for a large snapshot to measure).
'use strict';
const v8 = require('v8');

class Leaky {
  constructor(i) {
    this.id = i;
    this.payload = new Array(16).fill(i);
  }
}

// An ever-growing Map of Leaky instances.
globalThis.leakyMap = new Map();
for (let i = 0; i < 2000; i++) {
  globalThis.leakyMap.set(`key${i}`, new Leaky(i));
}

// A closure capturing a big array.
function makeHolder() {
  const bigArray = new Array(200000).fill(0).map((_, i) => i * 1.5);
  return function holdsBigArray() {
    return bigArray.length;
  };
}
globalThis.holder = makeHolder();

const extra = Number(process.argv[3] || 0);
if (extra > 0) {
  globalThis.many = [];
  for (let i = 0; i < extra; i++) {
    globalThis.many.push({ a: i, b: `s${i % 1000}`, c: { d: i } });
  }
}

v8.writeHeapSnapshot(process.argv[2]);
