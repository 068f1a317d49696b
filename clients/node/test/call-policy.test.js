'use strict';
// The call policy against real sidecars (tests/test_other_language_clients.py starts them): the
// default deadline, gRPC's own retries paced by the sidecar's RetryInfo and Health.Watch against
// one without a fleet on one thread (PLACECHECK_EMPTY_*; the last test writes its fleet), and
// round_robin over the workers' own ports (PLACECHECK_WORKER_TARGET) of the shared sidecar.
// Attempts are counted by the sidecar (placecheck_grpc_server_handled_total).
const assert = require('node:assert/strict');
const {describe, it} = require('node:test');
const grpc = require('@grpc/grpc-js');

const {NO_RETRIES, PlacementClient, StateClient, loadPlacecheck, waitUntilServing} = require('..');

const EMPTY_DECISION = process.env.PLACECHECK_EMPTY_DECISION_TARGET;
const EMPTY_STATE = process.env.PLACECHECK_EMPTY_STATE_TARGET;
const EMPTY_METRICS = process.env.PLACECHECK_EMPTY_METRICS_URL;
const NO_EMPTY_SIDECAR = !(EMPTY_DECISION && EMPTY_STATE && EMPTY_METRICS)
  && 'PLACECHECK_EMPTY_DECISION_TARGET, _STATE_TARGET and _METRICS_URL are not set (no sidecar without a fleet)';
const WORKER_TARGET = process.env.PLACECHECK_WORKER_TARGET;
const METRICS_URL = process.env.PLACECHECK_METRICS_URL;
const NO_WORKER_PORTS = !(WORKER_TARGET && METRICS_URL)
  && 'PLACECHECK_WORKER_TARGET and PLACECHECK_METRICS_URL are not set (no sidecar with --worker-ports)';

const HOST = 'node-retry-1';
const UNREACHABLE_GENERATION = 1_000_000_000; // a min_generation no write reaches: the sidecar waits for it
const NO_SNAPSHOT_RETRY_DELAY_MS = 100; // server/errors.py: the RetryInfo of UNAVAILABLE NO_SNAPSHOT
const MAX_GENERATION_WAIT_MS = 2000; // the sidecar's default --max-generation-wait
const SPREAD_CALLS = 200;

const workload = () => ({resources: {VCPU: 1, MEMORY_MB: 512}});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The samples of one metric family as [{labels, value}], from the sidecar's /metrics. */
async function samples(url, name) {
  const text = await (await fetch(url)).text();
  const found = [];
  for (const match of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
    const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    found.push({labels, value: Number(match[2])});
  }
  return found;
}

/** CheckDestination calls the sidecar without a fleet ended UNAVAILABLE so far (each attempt counts). */
async function unavailableAttempts() {
  return (await samples(EMPTY_METRICS, 'placecheck_grpc_server_handled_total'))
    .filter(({labels}) => labels.rpc === 'CheckDestination' && labels.code === 'UNAVAILABLE')
    .reduce((sum, {value}) => sum + value, 0);
}

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return assert.fail('the call succeeded');
}

describe('call policy against a sidecar without a fleet', {skip: NO_EMPTY_SIDECAR}, () => {
  it('ends a call without a deadline at the default deadline', async () => {
    const {PlacementCheck} = loadPlacecheck();
    const raw = new PlacementCheck(EMPTY_DECISION, grpc.credentials.createInsecure());
    // Holds the one thread for the sidecar's longest wait (2 s): the next call queues.
    const held = new Promise((resolve) => raw.CheckDestination(
      {request: workload(), hosts: [HOST], min_generation: UNREACHABLE_GENERATION},
      {deadline: new Date(Date.now() + 10_000)}, (error) => resolve(error)));
    await sleep(200);
    const hasty = new PlacementClient(EMPTY_DECISION, {channels: 1, defaultDeadlineMs: 300, retry: NO_RETRIES});
    const patient = new PlacementClient(EMPTY_DECISION,
      {channels: 1, defaultDeadlineMs: MAX_GENERATION_WAIT_MS + 5000, retry: NO_RETRIES});
    try {
      const started = Date.now();
      const error = await failure(hasty.checkDestination(workload(), [HOST]));
      const elapsed = Date.now() - started;
      assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED, String(error));
      assert.ok(elapsed >= 250 && elapsed < 1000, `${elapsed} ms`);
      // With a longer default the same call outlasts the held thread and gets the sidecar's answer.
      assert.equal((await failure(patient.checkDestination(workload(), [HOST]))).code, grpc.status.UNAVAILABLE);
      assert.equal((await held).code, grpc.status.FAILED_PRECONDITION);
    } finally {
      hasty.close();
      patient.close();
      raw.close();
    }
  });

  it('lets the sidecar\'s RetryInfo pace gRPC\'s own retries', async () => {
    // gRPC's own backoff would wait at most 10 ms, then 20 ms: the sidecar's RetryInfo asks for 100 ms.
    const retry = {maxAttempts: 3, initialBackoffMs: 10, maxBackoffMs: 20, backoffMultiplier: 2};
    const client = new PlacementClient(EMPTY_DECISION, {channels: 1, retry});
    const before = await unavailableAttempts();
    try {
      const started = Date.now();
      const error = await failure(client.checkDestination(workload(), [HOST]));
      const elapsed = Date.now() - started;
      assert.equal(error.code, grpc.status.UNAVAILABLE, String(error));
      assert.ok(elapsed >= 2 * NO_SNAPSHOT_RETRY_DELAY_MS * 0.9, `3 attempts in ${elapsed} ms`);
    } finally {
      client.close();
    }
    assert.equal(await unavailableAttempts() - before, 3);
  });

  it('makes one attempt without retries', async () => {
    const client = new PlacementClient(EMPTY_DECISION, {channels: 1, retry: NO_RETRIES});
    const before = await unavailableAttempts();
    try {
      assert.equal((await failure(client.checkDestination(workload(), [HOST]))).code, grpc.status.UNAVAILABLE);
    } finally {
      client.close();
    }
    await sleep(300); // a retry, had there been one, would have come 100 ms later
    assert.equal(await unavailableAttempts() - before, 1);
  });

  // Last: it writes the fleet.
  it('watches health: NOT_SERVING, then SERVING once the fleet arrives', async () => {
    await assert.rejects(waitUntilServing(EMPTY_DECISION, 500), /not serving.*NOT_SERVING/);
    let returnedAt = null;
    const waiting = waitUntilServing(EMPTY_DECISION, 20_000).then(() => { returnedAt = Date.now(); });
    await sleep(500);
    assert.equal(returnedAt, null, 'SERVING before any fleet');
    const state = new StateClient(EMPTY_STATE);
    try {
      await state.replaceFleet({hosts: [{name: HOST, resources: {VCPU: {total: 16}, MEMORY_MB: {total: 32768}}}]});
    } finally {
      state.close();
    }
    const writtenAt = Date.now();
    await waiting;
    assert.ok(returnedAt - writtenAt < 1000, `returned ${returnedAt - writtenAt} ms after the fleet was written`);
  });
});

describe('one channel over the workers\' own ports', {skip: NO_WORKER_PORTS}, () => {
  it('spreads its calls over every worker', async () => {
    const workerCalls = async () => Object.fromEntries(
      (await samples(METRICS_URL, 'placecheck_worker_calls_total')).map(({labels, value}) => [labels.worker, value]));
    const addresses = WORKER_TARGET.replace(/^ipv4:/, '').split(',');
    await waitUntilServing(addresses, 10_000);
    const client = new PlacementClient(addresses); // one channel: one connection per worker
    const call = () => client.checkDestination(workload(), ['compute-00042']);
    let before = await workerCalls();
    try {
      // round_robin picks among the connections up so far: the calls of a first burst all go to
      // the first worker it reaches. Warm up until both have answered, then measure.
      for (const warmUntil = Date.now() + 10_000; ; before = await workerCalls()) {
        await Promise.all(Array.from({length: 10}, call));
        const after = await workerCalls();
        if (Object.keys(after).every((worker) => after[worker] > (before[worker] || 0))) break;
        assert.ok(Date.now() < warmUntil, `calls reach one worker only: ${JSON.stringify(after)}`);
        await sleep(50);
      }
      before = await workerCalls();
      const answers = await Promise.all(Array.from({length: SPREAD_CALLS}, call));
      assert.ok(answers.every((answer) => answer.verdicts[0].host === 'compute-00042'));
    } finally {
      client.close();
    }
    const after = await workerCalls();
    assert.equal(Object.keys(after).length, 2, JSON.stringify(after));
    for (const [worker, count] of Object.entries(after)) {
      assert.ok(count - (before[worker] || 0) >= 0.45 * SPREAD_CALLS,
        `worker ${worker} received ${count - (before[worker] || 0)} of ${SPREAD_CALLS} calls: ${JSON.stringify({before, after})}`);
    }
  });
});
