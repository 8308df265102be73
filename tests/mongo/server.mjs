// MongoDB wire-compatible test server for leakshim's integration tests.
//
//   node tests/mongo/server.mjs PORT [--host 127.0.0.1] [--exit-on-stdin-eof]
//   node tests/mongo/server.mjs --check        # exit 0 if the server code can be loaded
//
// Serves CongoDB (the in-memory wire-protocol server in @push.rocks/smartmongo, installed by
// tests/mongo/setup.sh) on HOST:PORT and prints "ready PORT" on stdout once it is listening
// (PORT 0 picks a free port; the line tells which). It exits on SIGTERM/SIGINT, and with
// --exit-on-stdin-eof also when its stdin closes (so a test runner that dies leaves no server).
//
// A few small fixes are applied on top of CongoDB so that libmongoc 1.23 and pymongo behave
// as they do against a real mongod (see README.md):
//   - hello/isMaster report one stable topologyVersion for the life of the process (CongoDB
//     makes a new processId per reply, which tells a streaming monitor "topology changed");
//   - an "awaitable" hello (topologyVersion + maxAwaitTimeMS, sent by the monitors of pooled
//     libmongoc clients and of pymongo) is answered after maxAwaitTimeMS instead of at once,
//     otherwise those monitors spin at 100% CPU on both ends;
//   - an OP_MSG sent with the moreToCome flag (unacknowledged write) gets no reply;
//   - "buildinfo" (lower case, as pymongo's server_info() sends it) is accepted.

const MODULE = './node_modules/@push.rocks/smartmongo/dist_ts/congodb/index.js';
const MSG_FLAG_MORE_TO_COME = 1 << 1;
const MAX_AWAIT_CAP_MS = 60_000;

function usage(msg) {
  if (msg) process.stderr.write(`server.mjs: ${msg}\n`);
  process.stderr.write('usage: node server.mjs PORT [--host HOST] [--exit-on-stdin-eof] | --check\n');
  process.exit(2);
}

async function loadCongo() {
  try {
    return await import(MODULE);
  } catch (err) {
    process.stderr.write(
      `server.mjs: cannot load CongoDB (${err.message}); run: bash tests/mongo/setup.sh\n`);
    process.exit(3);
  }
}

function patch(congo, server) {
  const { WireProtocol, plugins } = congo;
  const bson = plugins.bson;
  const NO_REPLY = Symbol('no-reply');

  // 1. Remember the OP_MSG flag bits on the parsed command.
  const parseOpMsg = WireProtocol.parseOpMsg.bind(WireProtocol);
  WireProtocol.parseOpMsg = (buffer, header) => {
    const res = parseOpMsg(buffer, header);
    if (res && res.command) res.command.flagBits = buffer.readUInt32LE(16);
    return res;
  };

  // 2. No reply to moreToCome requests.
  const router = server.commandRouter;
  const route = router.route.bind(router);
  router.route = async (parsed) => {
    const response = await route(parsed);
    if (parsed.flagBits !== undefined && (parsed.flagBits & MSG_FLAG_MORE_TO_COME)) return NO_REPLY;
    return response;
  };
  const encodeOpMsgResponse = WireProtocol.encodeOpMsgResponse.bind(WireProtocol);
  WireProtocol.encodeOpMsgResponse = (responseTo, response, ...rest) =>
    response === NO_REPLY ? Buffer.alloc(0) : encodeOpMsgResponse(responseTo, response, ...rest);

  // 3. Stable topologyVersion and awaitable hello.
  const topologyVersion = { processId: new bson.ObjectId(), counter: bson.Long.fromNumber(0) };
  const hello = router.handlers.get('hello');
  let connectionIds = 0;
  const wrappedHello = {
    async handle(context) {
      const cmd = context.command;
      const response = await hello.handle(context);
      response.topologyVersion = topologyVersion;
      response.connectionId = ++connectionIds;
      const wait = Number(cmd.maxAwaitTimeMS);
      const tv = cmd.topologyVersion;
      if (tv && Number.isFinite(wait) && wait > 0 &&
          String(tv.processId) === String(topologyVersion.processId)) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(wait, MAX_AWAIT_CAP_MS)));
        response.localTime = new Date();
      }
      return response;
    },
  };
  for (const name of ['hello', 'isMaster', 'ismaster']) router.handlers.set(name, wrappedHello);

  // 4. buildinfo alias.
  const admin = router.handlers.get('buildInfo');
  router.handlers.set('buildinfo', {
    handle: (context) => admin.handle({ ...context, command: { buildInfo: 1, ...context.command } }),
  });
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--check') {
    const congo = await loadCongo();
    if (typeof congo.CongoServer !== 'function') usage('CongoServer not found in module');
    const s = new congo.CongoServer({ port: 0 });
    patch(congo, s);
    process.stdout.write('ok\n');
    return;
  }
  let port;
  let host = '127.0.0.1';
  let stdinWatch = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--host') host = args[++i] ?? usage('--host needs a value');
    else if (a === '--exit-on-stdin-eof') stdinWatch = true;
    else if (/^\d+$/.test(a) && port === undefined) port = Number(a);
    else usage(`bad argument: ${a}`);
  }
  if (port === undefined || port > 65535) usage('PORT missing or out of range');

  const congo = await loadCongo();
  const server = new congo.CongoServer({ port, host, storage: 'memory' });
  patch(congo, server);

  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    const timer = setTimeout(() => process.exit(code), 2000);
    timer.unref();
    try { await server.stop(); } catch { /* exiting anyway */ }
    process.exit(code);
  };
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
  if (stdinWatch) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => stop(0));
    process.stdin.on('error', () => stop(0));
  }

  try {
    await server.start();
  } catch (err) {
    process.stderr.write(`server.mjs: cannot listen on ${host}:${port}: ${err.message}\n`);
    process.exit(1);
  }
  const actual = server.server.address().port;
  process.stdout.write(`ready ${actual}\n`);
}

main().catch((err) => {
  process.stderr.write(`server.mjs: ${err.stack || err}\n`);
  process.exit(1);
});
