'use strict';
// The Node.js client against the real sidecar, whose addresses come from the environment
// (tests/test_other_language_clients.py starts one and sets them), and, for round-robin over
// connections, against an in-process server that records each call's peer.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const {after, before, describe, it} = require('node:test');
const grpc = require('@grpc/grpc-js');

const {PlacementClient, StateClient, badRequestViolations, loadPlacecheck, waitUntilServing} = require('..');

const DECISION_TARGET = process.env.PLACECHECK_DECISION_TARGET;
const STATE_TARGET = process.env.PLACECHECK_STATE_TARGET;
const NO_SIDECAR = !(DECISION_TARGET && STATE_TARGET)
  && 'PLACECHECK_DECISION_TARGET and PLACECHECK_STATE_TARGET are not set (no sidecar to talk to)';
const TIMEOUT_MS = 10_000;
const TRAIT = 'CUSTOM_NODE_CLIENT_TEST'; // only this file's hosts have it
const CHANNELS = 4;

function host(name, {memoryUsed = 0, enabled = true} = {}) {
  return {
    name, enabled, traits: [TRAIT],
    resources: {
      VCPU: {total: 16, allocation_ratio: 4.0},
      MEMORY_MB: {total: 32768, used: memoryUsed},
      DISK_GB: {total: 500},
    },
  };
}

function workload(memoryMb = 4096) {
  return {resources: {VCPU: 2, MEMORY_MB: memoryMb, DISK_GB: 20}, required_traits: [TRAIT]};
}

/** Established TCP connections of this process to `port` (Linux /proc). */
function connectionsTo(port) {
  const sockets = new Set();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let link = '';
    try { link = fs.readlinkSync(`/proc/self/fd/${fd}`); } catch { continue; }
    const match = /^socket:\[(\d+)\]$/.exec(link);
    if (match) sockets.add(match[1]);
  }
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!fs.existsSync(table)) continue;
    for (const line of fs.readFileSync(table, 'utf8').trim().split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const remotePort = parseInt(fields[2].split(':')[1], 16);
      if (remotePort === port && fields[3] === '01' && sockets.has(fields[9])) count += 1;
    }
  }
  return count;
}

describe('against the real sidecar', {skip: NO_SIDECAR}, () => {
  let placement;
  let state;
  let generation;

  before(async () => {
    await waitUntilServing(DECISION_TARGET, TIMEOUT_MS);
    placement = new PlacementClient(DECISION_TARGET, {channels: CHANNELS});
    state = new StateClient(STATE_TARGET);
    generation = await state.upsertHosts([
      host('node-client-ok-1'), host('node-client-ok-2'), host('node-client-ok-3'),
      host('node-client-full', {memoryUsed: 30000, enabled: false}),
    ], {timeoutMs: TIMEOUT_MS});
  });

  after(() => {
    placement?.close();
    state?.close();
  });

  it('reports the fleet status', async () => {
    const status = await state.status({timeoutMs: TIMEOUT_MS});
    assert.ok(status.generation >= generation, `${status.generation} < ${generation}`);
    assert.ok(status.host_count >= 4);
  });

  it('allows a host that fits', async () => {
    const answer = await placement.checkDestination(workload(), ['node-client-ok-1'],
      {minGeneration: generation, timeoutMs: TIMEOUT_MS});
    assert.ok(answer.generation >= generation);
    assert.ok(answer.decision_id);
    assert.equal(answer.verdicts.length, 1);
    const [verdict] = answer.verdicts;
    assert.equal(verdict.host, 'node-client-ok-1');
    assert.equal(verdict.allowed, true);
    assert.deepEqual(verdict.rejections, []);
    assert.ok(verdict.rules_evaluated.includes('resource:MEMORY_MB'));
  });

  it('refuses a host with every rule, reason and number', async () => {
    const answer = await placement.checkDestination(workload(), ['node-client-ok-1', 'node-client-full'],
      {minGeneration: generation, timeoutMs: TIMEOUT_MS});
    assert.deepEqual(answer.verdicts.map((verdict) => verdict.allowed), [true, false]);
    const refused = answer.verdicts[1];
    assert.deepEqual(refused.rejections.map((rejection) => [rejection.rule, rejection.reason]), [
      ['resource:MEMORY_MB', 'INSUFFICIENT_CAPACITY'],
      ['ComputeFilter', 'SERVICE_DISABLED'],
    ]);
    const memory = refused.rejections[0];
    assert.match(memory.message, /requested 4096, free 2768 of capacity 32768/);
    assert.equal(memory.numbers.requested, 4096);
    assert.equal(memory.numbers.free, 2768);
    assert.equal(memory.numbers.used, 30000);
  });

  it('selects hosts with alternates', async () => {
    const answer = await placement.selectDestinations({...workload(), num_instances: 2},
      {maxAlternates: 1, minGeneration: generation, timeoutMs: TIMEOUT_MS});
    assert.equal(answer.summary.instances_requested, 2);
    assert.equal(answer.summary.instances_placed, 2);
    assert.equal(answer.summary.hosts_passed, 3);
    assert.equal(answer.placements.length, 2);
    const ours = new Set(['node-client-ok-1', 'node-client-ok-2', 'node-client-ok-3']);
    for (const placement of answer.placements) {
      assert.ok(ours.has(placement.selected.host), placement.selected.host);
      assert.equal(placement.alternates.length, 1);
      assert.ok(ours.has(placement.alternates[0].host));
      assert.notEqual(placement.alternates[0].host, placement.selected.host);
      assert.ok(placement.selected.weighers.length > 0);
    }
    const eliminated = Object.fromEntries(answer.summary.eliminations.map((e) => [e.rule, e.hosts]));
    assert.equal(eliminated.RequiredTraits, answer.summary.hosts_evaluated - 4);
  });

  it('explains a select that nothing fits', async () => {
    const answer = await placement.selectDestinations(workload(1_000_000),
      {minGeneration: generation, timeoutMs: TIMEOUT_MS});
    assert.deepEqual(answer.placements, []);
    assert.equal(answer.summary.hosts_passed, 0);
    assert.match(answer.summary.message, /^0\/\d+ hosts fit: .*resource:MEMORY_MB/);
  });

  it('decodes INVALID_ARGUMENT to its field', async () => {
    await assert.rejects(
      placement.checkDestination({resources: {VCPU: -1}}, ['node-client-ok-1'], {timeoutMs: TIMEOUT_MS}),
      (error) => {
        assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
        const fields = badRequestViolations(error).map((violation) => violation.field);
        assert.ok(fields.includes('request.resources[VCPU]'), JSON.stringify(fields));
        return true;
      });
  });

  it('answers NOT_FOUND for an unknown host', async () => {
    await assert.rejects(
      placement.checkDestination(workload(), ['node-client-no-such-host'], {timeoutMs: TIMEOUT_MS}),
      (error) => {
        assert.equal(error.code, grpc.status.NOT_FOUND);
        assert.match(error.details, /node-client-no-such-host/);
        assert.deepEqual(badRequestViolations(error), []);
        return true;
      });
  });

  it('opens one connection per channel', {skip: !fs.existsSync('/proc/self/fd') && 'no /proc'}, async () => {
    const port = Number(DECISION_TARGET.split(':').pop());
    const before = connectionsTo(port); // the suite's own client's
    const client = new PlacementClient(DECISION_TARGET, {channels: CHANNELS});
    try {
      for (let call = 0; call < 2 * CHANNELS; call += 1) {
        await client.checkDestination(workload(), ['node-client-ok-1'], {timeoutMs: TIMEOUT_MS});
      }
      assert.equal(connectionsTo(port) - before, CHANNELS);
    } finally {
      client.close();
    }
  });

  it('removes what it added', async () => {
    const removed = await state.removeHosts(
      ['node-client-ok-1', 'node-client-ok-2', 'node-client-ok-3', 'node-client-full'], {timeoutMs: TIMEOUT_MS});
    assert.ok(removed > generation);
  });
});

const TLS = {
  target: process.env.PLACECHECK_TLS_DECISION_TARGET, ca: process.env.PLACECHECK_TLS_CA,
  cert: process.env.PLACECHECK_TLS_CERT, key: process.env.PLACECHECK_TLS_KEY, token: process.env.PLACECHECK_TOKEN,
};
const NO_TLS_SIDECAR = !Object.values(TLS).every(Boolean)
  && 'PLACECHECK_TLS_DECISION_TARGET, _CA, _CERT, _KEY and PLACECHECK_TOKEN are not set (no TLS sidecar)';

// A sidecar that requires mutual TLS and admits the identity "conductor" only
// (tests/test_other_language_clients.py): the certificate given here is another identity's, so a
// call gets through only with conductor's bearer token.
describe('with TLS and a token', {skip: NO_TLS_SIDECAR}, () => {
  async function checkCode(settings) {
    const client = new PlacementClient(TLS.target, {channels: 1, ...settings});
    try {
      await client.checkDestination({resources: {VCPU: 1}}, ['compute-00000'], {timeoutMs: TIMEOUT_MS});
      return grpc.status.OK;
    } catch (error) {
      return error.code;
    } finally {
      client.close();
    }
  }

  it('needs an admitted identity and a client certificate', async () => {
    const withCert = {ca: TLS.ca, cert: TLS.cert, key: TLS.key};
    await waitUntilServing(TLS.target, TIMEOUT_MS, {tls: withCert});
    assert.equal(await checkCode({tls: withCert}), grpc.status.PERMISSION_DENIED);
    assert.equal(await checkCode({tls: withCert, token: TLS.token}), grpc.status.OK);
    assert.equal(await checkCode({tls: {ca: TLS.ca}, token: TLS.token}), grpc.status.UNAVAILABLE);
  });
});

describe('round-robin over connections', () => {
  it('gives each channel its own connection and calls rotate over them', async () => {
    const {PlacementCheck} = loadPlacecheck();
    const peers = [];
    const server = new grpc.Server();
    server.addService(PlacementCheck.service, {
      CheckDestination(call, callback) {
        peers.push(call.getPeer());
        callback(null, {});
      },
      SelectDestinations(call, callback) {
        callback({code: grpc.status.UNIMPLEMENTED});
      },
    });
    const port = await new Promise((resolve, reject) => server.bindAsync(
      '127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
    const client = new PlacementClient(`127.0.0.1:${port}`, {channels: CHANNELS});
    try {
      for (let call = 0; call < 2 * CHANNELS; call += 1) {
        await client.checkDestination(workload(), ['host0'], {timeoutMs: TIMEOUT_MS});
      }
    } finally {
      client.close();
      server.forceShutdown();
    }
    assert.equal(new Set(peers).size, CHANNELS);
    assert.deepEqual(peers.slice(0, CHANNELS), peers.slice(CHANNELS));
  });

  it('waitUntilServing gives up on a closed port in time', async () => {
    const server = new grpc.Server();
    const port = await new Promise((resolve, reject) => server.bindAsync(
      '127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
    server.forceShutdown(); // the port is free again: nothing listens
    const started = Date.now();
    await assert.rejects(waitUntilServing(`127.0.0.1:${port}`, 500), /not serving/);
    assert.ok(Date.now() - started < 2000, `${Date.now() - started} ms`);
  });

  it('rejects fewer than one channel', () => {
    assert.throws(() => new PlacementClient('127.0.0.1:1', {channels: 0}), RangeError);
  });
});
