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
    Health: {methods: {Check: {requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse'}}},
  }}}}}}},
}, LOADER_OPTIONS)).grpc.health.v1;

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
 * pool (and so its own TCP connection) and a distinct channel id.
 *
 * `tls` ({ca, cert, key} file paths) connects over TLS, mutual with cert and key; `token` is sent
 * as `authorization: Bearer <token>` with every call; `credentials` replaces `tls` outright.
 */
class PlacementClient {
  /**
   * @param {string} target host:port of the decision API
   * @param {{channels?: number, options?: object, tls?: {ca?: string, cert?: string, key?: string},
   *   token?: string, credentials?: grpc.ChannelCredentials, protoDir?: string}} settings
   */
  constructor(target = DEFAULT_DECISION_TARGET, {channels = defaultChannels(), options = {}, tls, token,
    credentials = channelCredentials(tls), protoDir = DEFAULT_PROTO_DIR} = {}) {
    if (!Number.isInteger(channels) || channels < 1) {
      throw new RangeError(`channels must be an integer >= 1, got ${channels}`);
    }
    const {PlacementCheck} = loadPlacecheck(protoDir);
    this.target = target;
    this._metadata = tokenMetadata(token);
    this._stubs = Array.from({length: channels}, (_, index) => new PlacementCheck(target, credentials, {
      ...options,
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
 * published, to pass on as `minGeneration`. `tls`, `token` and `credentials` as for
 * PlacementClient (a sidecar serving FleetState over TCP).
 */
class StateClient {
  constructor(target = DEFAULT_STATE_TARGET, {options = {}, tls, token, credentials = channelCredentials(tls),
    protoDir = DEFAULT_PROTO_DIR} = {}) {
    const {FleetState} = loadPlacecheck(protoDir);
    this.target = target;
    this._metadata = tokenMetadata(token);
    this._stub = new FleetState(target, credentials, options);
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
 * Resolves once grpc.health.v1 reports `service` SERVING at `target`; rejects with an Error
 * whose message says "not serving" when it does not within `timeoutMs`. `tls` as for PlacementClient.
 */
async function waitUntilServing(target, timeoutMs, {service = '', tls} = {}) {
  const deadline = Date.now() + timeoutMs;
  const health = new healthPackage.Health(target, channelCredentials(tls));
  let lastSeen = 'no answer';
  try {
    while (Date.now() < deadline) {
      try {
        const reply = await new Promise((resolve, reject) => health.Check(
          {service}, new grpc.Metadata({waitForReady: true}), {deadline: new Date(deadline)},
          (error, response) => (error ? reject(error) : resolve(response))));
        if (reply.status === 'SERVING') return;
        lastSeen = reply.status;
      } catch (error) {
        lastSeen = `${grpc.status[error.code]}: ${error.details}`;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(50, deadline - Date.now()))));
    }
  } finally {
    health.close();
  }
  throw new Error(`${target} not serving ${service || 'the server'} within ${timeoutMs} ms (${lastSeen})`);
}

function defaultChannels() {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : (os.cpus().length || 2);
}

module.exports = {
  DEFAULT_DECISION_TARGET,
  DEFAULT_STATE_TARGET,
  DEFAULT_PROTO_DIR,
  PlacementClient,
  StateClient,
  badRequestViolations,
  richStatus,
  waitUntilServing,
  loadPlacecheck,
  status: grpc.status,
};
