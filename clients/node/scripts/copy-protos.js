'use strict';
// npm's prepare script (npm ci in the checkout, npm pack): copies the repository's proto/ and
// LICENSE into the package, which loads the protos from its own directory at run time, so the
// packed package carries them.
const fs = require('node:fs');
const path = require('node:path');

const packageDir = path.resolve(__dirname, '..');
const checkout = path.resolve(packageDir, '..', '..');
const target = path.join(packageDir, 'proto');
fs.rmSync(target, {recursive: true, force: true});
fs.cpSync(path.join(checkout, 'proto'), target,
  {recursive: true, filter: (source) => fs.statSync(source).isDirectory() || source.endsWith('.proto')});
fs.copyFileSync(path.join(checkout, 'LICENSE'), path.join(packageDir, 'LICENSE'));
