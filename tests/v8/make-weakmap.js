// Builds WeakMaps whose values are large and writes a V8 heap snapshot: `node make-weakmap.js OUT`.
// Live keys: 40 `WMKey` objects held by the global `wmKeys`, each mapped in the global WeakMap
// `wmLive` to a `WMValue` holding 4000 numbers. Dead keys: 40 `WMDeadKey` objects referenced only
// by the WeakMap `wmDead`, mapped to `WMDeadValue`s; the collection before the snapshot frees both.
'use strict';
const v8 = require('v8');

class WMKey {
  constructor(i) {
    this.i = i;
  }
}
class WMValue {
  constructor(i) {
    this.payload = new Array(4000).fill(i + 0.5);
  }
}
class WMDeadKey {}
class WMDeadValue {
  constructor(i) {
    this.payload = new Array(4000).fill(i + 0.25);
  }
}

globalThis.wmKeys = [];
globalThis.wmLive = new WeakMap();
globalThis.wmDead = new WeakMap();
for (let i = 0; i < 40; i++) {
  const key = new WMKey(i);
  globalThis.wmKeys.push(key);
  globalThis.wmLive.set(key, new WMValue(i));
  globalThis.wmDead.set(new WMDeadKey(), new WMDeadValue(i));
}

v8.writeHeapSnapshot(process.argv[2]);
