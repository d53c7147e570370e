// Runs the composed conformance suite under jco on Node:
// `node run-suite.mjs TRANSPILED FIXTURE`, TRANSPILED being the output of
// `jco transpile conformance.composed.wasm --name conformance
// --instantiation sync`. The guest sees only FIXTURE, as /work, an empty
// environment and its arguments: preview2-shim 0.26.1 preopens nothing by
// default, and hands a guest the whole of process.env unless told.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';

const [transpiled, fixture] = process.argv.slice(2);
const { instantiate } = await import(pathToFileURL(join(transpiled, 'conformance.js')));
const shim = new WASIShim({ sandbox: { preopens: { '/work': fixture }, env: {}, args: ['conformance', '/work'] } });
const getCoreModule = (name) => new WebAssembly.Module(readFileSync(join(transpiled, name)));
const suite = instantiate(getCoreModule, shim.getImportObject());
try {
  suite.run.run();
} catch (e) {
  // The suite's `run` returned an error (checks failed; it printed which),
  // or the guest trapped.
  if (e?.payload !== undefined || !(e?.name === 'ComponentError')) console.error(e);
  process.exitCode = 1;
}
