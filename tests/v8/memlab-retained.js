// Loads a V8 heap snapshot with memlab and prints the TOP largest nodes by memlab's retained size
// as JSON lines {id, retainedSize}: `node memlab-retained.js SNAPSHOT [TOP]` (TOP `all`: every
// node; 0: none, only the figures, as the benchmark runs it). On stderr: load time and peak RSS.
// Mirrors @memlab/heap-analysis' getFullHeapFromFile (parse, then the path finder's dominators and
// retained sizes) with @memlab/core alone.
'use strict';
const { utils, analysis, config } = require('@memlab/core');

async function main() {
  const file = process.argv[2];
  const top = process.argv[3] === 'all' ? Infinity : Number(process.argv[3] || 1000);
  config.muteConsole = true;
  const start = process.hrtime.bigint();
  const heap = await utils.getSnapshotFromFile(file, { buildNodeIdIndex: true });
  analysis.preparePathFinder(heap);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (top > 0) {
    const nodes = [];
    heap.nodes.forEach((node) => {
      nodes.push({ id: node.id, retainedSize: node.retainedSize });
    });
    nodes.sort((a, b) => b.retainedSize - a.retainedSize || a.id - b.id);
    const out = nodes.slice(0, top).map((n) => JSON.stringify(n)).join('\n');
    process.stdout.write(out + '\n');
  }
  const rss = process.resourceUsage().maxRSS * 1024;
  process.stderr.write(JSON.stringify({ seconds, maxRSS: rss, nodes: heap.nodes.length }) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
