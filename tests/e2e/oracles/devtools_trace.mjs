// Loads a Trace Event Format file with Chrome DevTools' own trace engine (the model behind the
// DevTools Performance panel, npm @paulirish/trace_engine) and prints what it understood, as JSON:
//   {"processes": {pid: name}, "threads": [{"pid", "tid", "name",
//     "entries": [{"name", "ph", "ts", "dur", "args", "parent"}]}]}
// "entries" are the engine's per-thread entries after its own sorting; "parent" is the index of the
// enclosing entry in the engine's call tree, or null for a root; an entry the engine could not place
// in its tree (bad nesting) has "parent": "dropped".
// The file is parsed with JSON.parse; the engine does everything else. Nothing is fixed up here.
//
// Usage: node devtools_trace.mjs TRACE.json
import fs from 'node:fs';
import {polyfillDOMRect} from '@paulirish/trace_engine/analyze-trace.mjs';
import * as Trace from '@paulirish/trace_engine/models/trace/trace.js';

polyfillDOMRect();
const parsed = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const events = Array.isArray(parsed) ? parsed : parsed.traceEvents;
const model = Trace.TraceModel.Model.createWithAllHandlers();
await model.parse(events);
const data = model.parsedTrace(0).data ?? model.parsedTrace(0);

const processes = {};
for (const [pid, ev] of data.Meta.processNames) {
  processes[pid] = ev.args.name;
}
const threads = [];
for (const [pid, proc] of data.Renderer.processes) {
  for (const [tid, thread] of proc.threads) {
    const index = new Map(thread.entries.map((e, i) => [e, i]));
    const inTree = new Map();
    const walk = (node, parent) => {
      inTree.set(node.entry, parent === null ? null : index.get(parent.entry));
      for (const child of node.children) walk(child, node);
    };
    for (const root of thread.tree?.roots ?? []) walk(root, null);
    threads.push({
      pid, tid, name: thread.name,
      entries: thread.entries.map(e => ({
        name: e.name, ph: e.ph, ts: e.ts, dur: e.dur ?? null, args: e.args ?? {},
        parent: inTree.has(e) ? inTree.get(e) : 'dropped',
      })),
    });
  }
}
process.stdout.write(JSON.stringify({processes, threads}) + '\n');
