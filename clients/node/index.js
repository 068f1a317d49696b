'use strict';
/**
 * A thin Node.js client for the placecheck sidecar.
 *
 * It loads the contract from its proto/ at run time (@grpc/proto-loader, no generated code) and
 * depends on nothing of the engine or the server. Messages are plain objects with the proto's
 * field names (snake_case), enums as their names ('OPERATION_LIVE_MIGRATE'), 64-bit integers as
 * JavaScript numbers (every amount, count and generation placecheck uses fits in 2**53).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const DEFAULT_DECISION_TARGET = '127.0.0.1:50051';
/** The deadline of a call that sets none: above the sidecar's longest min_generation wait (2 s). */
const DEFAULT_DEADLINE_MS = 5000;
/** ReplaceFleet's: a whole fleet of 100,000 hosts takes about 15 s. */
const DEFAULT_REPLACE_DEADLINE_MS = 60_000;
/**
 * gRPC's own retry policy (the service config's) for UNAVAILABLE and RESOURCE_EXHAUSTED. When a
 * refusal carries a google.rpc.RetryInfo (no fleet yet: 100 ms; the store full or failing: 1 s),
 * the sidecar also sends its delay as gRPC's retry pushback (grpc-retry-pushback-ms), which
 * replaces the backoff. FleetState's writes are retried too: each replaces or removes by name, so
 * sending one again changes nothing more. grpc-js makes at most 5 attempts.
 */
const DEFAULT_RETRY_POLICY = Object.freeze({maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 2000, backoffMultiplier: 2});
/** One attempt only. */
const NO_RETRIES = Object.freeze({...DEFAULT_RETRY_POLICY, maxAttempts: 1});
// What the retry policy retries; other codes are answers, not transient failures.
const RETRYABLE_CODES = ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'];
/**
 * Where `placecheck serve` puts its state socket by default: $XDG_RUNTIME_DIR/placecheck/state.sock,
 * else placecheck/run/state.sock under $XDG_STATE_HOME (~/.local/state).
 */
function defaultStateSocket() {
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'placecheck', 'state.sock');
  const stateHome = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(stateHome, 'placecheck', 'run', 'state.sock');
}
const DEFAULT_STATE_TARGET = `unix:${defaultStateSocket()}`;
/**
 * The protos this package carries (copied in by its prepare script: npm ci in the checkout, npm
 * pack); PLACECHECK_PROTO_DIR or the protoDir option override them.
 */
const DEFAULT_PROTO_DIR = process.env.PLACECHECK_PROTO_DIR || path.join(__dirname, 'proto');

const LOADER_OPTIONS = {keepCase: true, longs: Number, enums: String, defaults: true, oneofs: false};

const protoCache = new Map();

/** The gRPC package definitions of placecheck.v1, loaded once per proto directory. */
function loadPlacecheck(protoDir = DEFAULT_PROTO_DIR) {
  if (!protoCache.has(protoDir)) {
    const definition = protoLoader.loadSync(
      ['placecheck/v1/placement.proto', 'placecheck/v1/state.proto', 'placecheck/v1/fleet.proto'],
      {...LOADER_OPTIONS, includeDirs: [protoDir]});
    protoCache.set(protoDir, grpc.loadPackageDefinition(definition).placecheck.v1);
  }
  return protoCache.get(protoDir);
}

// google.rpc.Status and google.rpc.BadRequest: the few fields the rich error model needs, with
// googleapis' field numbers, so that no googleapis .proto files have to ship with the client.
const richStatusRoot = protobuf.Root.fromJSON({
  nested: {
    google: {nested: {
      protobuf: {nested: {Any: {fields: {type_url: {type: 'string', id: 1}, value: {type: 'bytes', id: 2}}}}},
      rpc: {nested: {
        Status: {fields: {
          code: {type: 'int32', id: 1},
          message: {type: 'string', id: 2},
          details: {rule: 'repeated', type: 'google.protobuf.Any', id: 3},
        }},
        BadRequest: {
          fields: {field_violations: {rule: 'repeated', type: 'FieldViolation', id: 1}},
          nested: {FieldViolation: {fields: {
            field: {type: 'string', id: 1},
            description: {type: 'string', id: 2},
            reason: {type: 'string', id: 3},
          }}},
        },
      }},
    }},
  },
});
const StatusMessage = richStatusRoot.lookupType('google.rpc.Status');
const BadRequestMessage = richStatusRoot.lookupType('google.rpc.BadRequest');

// grpc.health.v1, as grpc-health-probe and every gRPC language ship it.
const healthPackage = grpc.loadPackageDefinition(protoLoader.fromJSON({
  nested: {grpc: {nested: {health: {nested: {v1: {nested: {
    HealthCheckRequest: {fields: {service: {type: 'string', id: 1}}},
    HealthCheckResponse: {
      fields: {status: {type: 'ServingStatus', id: 1}},
      nested: {ServingStatus: {values: {UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3}}},
    },
    Health: {methods: {
      Check: {requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse'},
      Watch: {requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse', responseStream: true},
    }},
  }}}}}}},
}, LOADER_OPTIONS)).grpc.health.v1;

function seconds(ms) {
  return `${(ms / 1000).toFixed(9)}s`;
}

/**
 * gRPC's service config (JSON) for both placecheck services: round_robin over the target's
 * addresses, `defaultDeadlineMs` for a call without a deadline (DEFAULT_REPLACE_DEADLINE_MS at
 * least for ReplaceFleet) and the retry policy. gRPC takes the earlier of a call's own deadline
 * and this one.
 */
function serviceConfig({defaultDeadlineMs = DEFAULT_DEADLINE_MS, retry = DEFAULT_RETRY_POLICY} = {}) {
  if (!(defaultDeadlineMs > 0)) throw new RangeError(`defaultDeadlineMs must be > 0, got ${defaultDeadlineMs}`);
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1) {
    throw new RangeError(`maxAttempts must be an integer >= 1, got ${retry.maxAttempts}`);
  }
  const methodConfig = (deadlineMs, name) => ({
    name,
    timeout: seconds(deadlineMs),
    // gRPC refuses a retry policy of fewer than 2 attempts.
    ...(retry.maxAttempts > 1 && {retryPolicy: {
      maxAttempts: retry.maxAttempts,
      initialBackoff: seconds(retry.initialBackoffMs),
      maxBackoff: seconds(retry.maxBackoffMs),
      backoffMultiplier: retry.backoffMultiplier,
      retryableStatusCodes: RETRYABLE_CODES,
    }}),
  });
  return JSON.stringify({
    loadBalancingConfig: [{round_robin: {}}],
    methodConfig: [
      methodConfig(defaultDeadlineMs, [{service: 'placecheck.v1.PlacementCheck'}, {service: 'placecheck.v1.FleetState'}]),
      methodConfig(Math.max(defaultDeadlineMs, DEFAULT_REPLACE_DEADLINE_MS),
        [{service: 'placecheck.v1.FleetState', method: 'ReplaceFleet'}]),
    ],
  });
}

/** Channel options carrying the call policy, before the caller's own. */
function channelOptions(callPolicy, options) {
  return {'grpc.service_config': serviceConfig(callPolicy), 'grpc.enable_retries': 1, ...options};
}

/**
 * One target for several decision addresses, e.g. the workers' own ports (`placecheck serve
 * --worker-ports`): ['127.0.0.1:50061', '127.0.0.1:50062'] -> 'ipv4:127.0.0.1:50061,127.0.0.1:50062'
 * ('ipv6:' for [::1]:PORT), over which a channel's round_robin spreads calls. IP literals of one
 * family; for a name, a DNS name resolving to several addresses does the same.
 */
function workerTarget(addresses) {
  if (!addresses.length) throw new RangeError('no addresses');
  const families = new Set(addresses.map((address) => (address.startsWith('[') ? 'ipv6' : 'ipv4')));
  if (families.size > 1) throw new RangeError(`${addresses} mixes IPv4 and IPv6 addresses`);
  return `${[...families][0]}:${addresses.join(',')}`;
}

function callOptions(timeoutMs) {
  return timeoutMs == null ? {} : {deadline: new Date(Date.now() + timeoutMs)};
}

/**
 * Channel credentials: plaintext without `tls`; with `tls` = {ca, cert, key} (PEM file paths), TLS
 * verified by `ca` (omitted: the system's roots), presenting `cert`/`key` for mutual TLS.
 */
function channelCredentials(tls) {
  if (!tls) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(tls.ca), read(tls.key), read(tls.cert));
}

/** Call metadata carrying `authorization: Bearer <token>` (none without a token). */
function tokenMetadata(token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function unary(stub, method, message, timeoutMs, metadata = new grpc.Metadata()) {
  return new Promise((resolve, reject) => {
    stub[method](message, metadata.clone(), callOptions(timeoutMs), (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

/**
 * Calls PlacementCheck over several channels, round-robin.
 *
 * The sidecar's workers share one port with SO_REUSEPORT, which spreads connections, not calls:
 * one channel would pin every call to one worker. Each channel therefore gets its own subchannel
 * pool (and so its own TCP connection) and a distinct channel id. Given the workers' own
 * addresses instead (an array, or a workerTarget()), each channel connects to every worker and
 * its round_robin spreads the calls, so one channel (the default then) is enough.
 *
 * `defaultDeadlineMs` (DEFAULT_DEADLINE_MS) bounds a call; UNAVAILABLE and RESOURCE_EXHAUSTED
 * are retried by gRPC as `retry` says (DEFAULT_RETRY_POLICY; NO_RETRIES: never).
 *
 * `tls` ({ca, cert, key} file paths) connects over TLS, mutual with cert and key; `token` is sent
 * as `authorization: Bearer <token>` with every call; `credentials` replaces `tls` outright.
 */
class PlacementClient {
  /**
   * @param {string|string[]} target host:port of the decision API, or the workers' own addresses
   * @param {{channels?: number, options?: object, tls?: {ca?: string, cert?: string, key?: string},
   *   token?: string, credentials?: grpc.ChannelCredentials, protoDir?: string,
   *   defaultDeadlineMs?: number, retry?: object}} settings
   */
  constructor(target = DEFAULT_DECISION_TARGET, {channels = Array.isArray(target) ? 1 : defaultChannels(),
    options = {}, tls, token, credentials = channelCredentials(tls), protoDir = DEFAULT_PROTO_DIR,
    defaultDeadlineMs, retry} = {}) {
    if (!Number.isInteger(channels) || channels < 1) {
      throw new RangeError(`channels must be an integer >= 1, got ${channels}`);
    }
    const {PlacementCheck} = loadPlacecheck(protoDir);
    this.target = Array.isArray(target) ? workerTarget(target) : target;
    this._metadata = tokenMetadata(token);
    this._stubs = Array.from({length: channels}, (_, index) => new PlacementCheck(this.target, credentials, {
      ...channelOptions({defaultDeadlineMs, retry}, options),
      'grpc.use_local_subchannel_pool': 1,
      'grpc.channel_id': index,
    }));
    this._calls = 0;
  }

  _nextStub() {
    const stub = this._stubs[this._calls % this._stubs.length];
    this._calls = (this._calls + 1) % Number.MAX_SAFE_INTEGER;
    return stub;
  }

  /**
   * One verdict per host, in order: allowed, or every rule that refuses it.
   * @returns {Promise<object>} a CheckDestinationResponse
   */
  checkDestination(request, hosts, {minGeneration = 0, timeoutMs} = {}) {
    return unary(this._nextStub(), 'CheckDestination',
      {request, hosts: [...hosts], min_generation: minGeneration}, timeoutMs, this._metadata);
  }

  /**
   * Ranked hosts with alternates; when too few fit, the summary says which rules eliminated them.
   * @returns {Promise<object>} a SelectDestinationsResponse
   */
  selectDestinations(request, {maxAlternates, minGeneration = 0, decisionId = '', timeoutMs} = {}) {
    const message = {request, min_generation: minGeneration, decision_id: decisionId};
    if (maxAlternates != null) message.max_alternates = maxAlternates;
    return unary(this._nextStub(), 'SelectDestinations', message, timeoutMs, this._metadata);
  }

  close() {
    for (const stub of this._stubs) stub.close();
  }
}

/**
 * Feeds the fleet to the sidecar's state owner; every mutator resolves to the generation it
 * published, to pass on as `minGeneration`. `tls`, `token`, `credentials`, `defaultDeadlineMs`
 * and `retry` as for PlacementClient (a sidecar serving FleetState over TCP).
 */
class StateClient {
  constructor(target = DEFAULT_STATE_TARGET, {options = {}, tls, token, credentials = channelCredentials(tls),
    protoDir = DEFAULT_PROTO_DIR, defaultDeadlineMs, retry} = {}) {
    const {FleetState} = loadPlacecheck(protoDir);
    this.target = target;
    this._metadata = tokenMetadata(token);
    this._stub = new FleetState(target, credentials, channelOptions({defaultDeadlineMs, retry}, options));
  }

  async _generation(method, message, timeoutMs) {
    return (await unary(this._stub, method, message, timeoutMs, this._metadata)).generation;
  }

  replaceFleet(fleet, {timeoutMs} = {}) { return this._generation('ReplaceFleet', {fleet}, timeoutMs); }
  upsertHosts(hosts, {timeoutMs} = {}) { return this._generation('UpsertHosts', {hosts: [...hosts]}, timeoutMs); }
  removeHosts(names, {timeoutMs} = {}) { return this._generation('RemoveHosts', {names: [...names]}, timeoutMs); }
  upsertAggregates(aggregates, {timeoutMs} = {}) {
    return this._generation('UpsertAggregates', {aggregates: [...aggregates]}, timeoutMs);
  }
  removeAggregates(ids, {timeoutMs} = {}) { return this._generation('RemoveAggregates', {ids: [...ids]}, timeoutMs); }
  updateUsage(usages, {timeoutMs} = {}) { return this._generation('UpdateUsage', {usages: [...usages]}, timeoutMs); }
  /** @returns {Promise<object>} a GetStatusResponse */
  status({timeoutMs} = {}) { return unary(this._stub, 'GetStatus', {}, timeoutMs, this._metadata); }

  close() { this._stub.close(); }
}

/**
 * The google.rpc.Status of a failed call (its `grpc-status-details-bin` trailer), decoded; null
 * when the error carries none.
 */
function richStatus(error) {
  const values = error && error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!values.length) return null;
  const raw = Buffer.isBuffer(values[0]) ? values[0] : Buffer.from(String(values[0]), 'base64');
  return StatusMessage.toObject(StatusMessage.decode(raw), {defaults: true});
}

/**
 * {field, description} pairs of the google.rpc.BadRequest in an error's rich status; empty when
 * the error carries none.
 */
function badRequestViolations(error) {
  const status = richStatus(error);
  if (status == null) return [];
  const violations = [];
  for (const detail of status.details) {
    if (detail.type_url.split('/').pop() !== 'google.rpc.BadRequest') continue;
    for (const violation of BadRequestMessage.decode(detail.value).field_violations) {
      violations.push({field: violation.field, description: violation.description});
    }
  }
  return violations;
}

/**
 * Resolves once grpc.health.v1 reports `service` SERVING at `target` (at every one of an array
 * of addresses, e.g. the workers' own); rejects with an Error whose message says "not serving"
 * and what it saw last when it does not within `timeoutMs`. One Watch waits for the connection,
 * then for the status to change (the sidecar reports NOT_SERVING until it has a fleet); it is
 * closed once SERVING, since an open Watch holds a sidecar thread. `tls` as for PlacementClient.
 */
async function waitUntilServing(target, timeoutMs, {service = '', tls} = {}) {
  const deadline = Date.now() + timeoutMs;
  for (const address of Array.isArray(target) ? target : [target]) {
    await watchUntilServing(address, deadline, timeoutMs, service, tls);
  }
}

async function watchUntilServing(target, deadline, timeoutMs, service, tls) {
  const health = new healthPackage.Health(target, channelCredentials(tls));
  let lastSeen = 'no answer';
  try {
    while (Date.now() < deadline) {
      const seen = await watchOnce(health, service, deadline, lastSeen);
      if (seen === null) return;
      lastSeen = seen;
      if (lastSeen.startsWith('UNIMPLEMENTED')) break;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(50, deadline - Date.now()))));
    }
  } finally {
    health.close();
  }
  throw new Error(`${target} not serving ${service || 'the server'} within ${timeoutMs} ms (${lastSeen})`);
}

/** Follows one Watch: resolves to null once SERVING, else to what it saw last. */
function watchOnce(health, service, deadline, lastSeen) {
  return new Promise((resolve) => {
    const call = health.Watch({service}, new grpc.Metadata({waitForReady: true}), {deadline: new Date(deadline)});
    call.on('data', (reply) => {
      if (reply.status === 'SERVING') {
        call.cancel();
        resolve(null);
      } else {
        lastSeen = reply.status;
      }
    });
    call.on('error', (error) => {
      // Out of time: what the Watch said last says more than the deadline.
      const outOfTime = error.code === grpc.status.DEADLINE_EXCEEDED && lastSeen !== 'no answer';
      resolve(outOfTime ? lastSeen : `${grpc.status[error.code]}: ${error.details}`);
    });
    call.on('end', () => resolve(`the Watch ended after ${lastSeen}`));
  });
}

function defaultChannels() {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : (os.cpus().length || 2);
}

module.exports = {
  DEFAULT_DEADLINE_MS,
  DEFAULT_REPLACE_DEADLINE_MS,
  DEFAULT_RETRY_POLICY,
  NO_RETRIES,
  DEFAULT_DECISION_TARGET,
  DEFAULT_STATE_TARGET,
  DEFAULT_PROTO_DIR,
  PlacementClient,
  StateClient,
  badRequestViolations,
  richStatus,
  serviceConfig,
  waitUntilServing,
  workerTarget,
  loadPlacecheck,
  status: grpc.status,
};
