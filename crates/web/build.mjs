// Builds the client into dist/ (committed, embedded in the binary by src/lib.rs):
//   node build.mjs          write dist/
//   node build.mjs --check  fail when dist/ is not what the sources build to
// The output is deterministic: minified ES module + CSS, index.html naming them by content
// hash (so they can be cached for good), and a gzip twin of every file.

import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { gzipSync, constants } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes('--check');

const bundle = async (entry, loader) => {
  const result = await build({
    entryPoints: [join(here, 'app', entry)],
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['chrome110', 'firefox115', 'safari16'],
    legalComments: 'eof',
    charset: 'utf8',
    write: false,
    logLevel: 'error',
    loader,
  });
  return Buffer.from(result.outputFiles[0].contents);
};

const hash = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 12);

const js = await bundle('main.js');
const css = await bundle('styles.css');
const html = Buffer.from(
  readFileSync(join(here, 'app', 'index.html'), 'utf8')
    .replace('{{JS_HASH}}', hash(js))
    .replace('{{CSS_HASH}}', hash(css))
    // Minified like the rest: the page is one line (no text node depends on a line break).
    .split('\n')
    .map((line) => line.trim())
    .join(''),
);
const files = {
  'index.html': html,
  'app.js': js,
  'app.css': css,
  'icon.svg': readFileSync(join(here, 'app', 'icon.svg')),
};

const out = join(here, 'dist');
let stale = [];
mkdirSync(out, { recursive: true });
for (const [name, bytes] of Object.entries(files)) {
  const gz = gzipSync(bytes, { level: constants.Z_BEST_COMPRESSION });
  for (const [file, content] of [[name, bytes], [`${name}.gz`, gz]]) {
    const path = join(out, file);
    if (check) {
      if (!existsSync(path) || !readFileSync(path).equals(content)) stale.push(file);
    } else {
      writeFileSync(path, content);
    }
  }
  console.log(`${name.padEnd(10)} ${String(bytes.length).padStart(8)} B  gzip ${String(gz.length).padStart(7)} B`);
}
if (stale.length > 0) {
  console.error(`crates/web/dist is stale (${stale.join(', ')}): run make web and commit it`);
  process.exit(1);
}
