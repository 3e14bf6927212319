// Drives a live server with the official, unmodified clients: `useAgent` (agents/react) and
// `useAgentChat` (@cloudflare/ai-chat/react) rendered by React in a jsdom document, exactly
// the code a browser app runs. Prints one JSON object on stdout; logs go to stderr.
//
//   node scenario.mjs <scenario> --host 127.0.0.1:8000 --agent ChatAgent --name room [--token T] [--text hi]
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://localhost/" });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.IS_REACT_ACT_ENVIRONMENT = false;

const React = (await import("react")).default;
const { createRoot } = await import("react-dom/client");
const { useAgent } = await import("agents/react");
const { useAgentChat } = await import("@cloudflare/ai-chat/react");

function parseArgs(argv) {
  const [scenario, ...rest] = argv;
  const options = { scenario, timeout: "30" };
  for (let i = 0; i < rest.length; i += 2) options[rest[i].replace(/^--/, "")] = rest[i + 1];
  return options;
}

const args = parseArgs(process.argv.slice(2));
const log = (...parts) => console.error("[scenario]", ...parts);

// A browser queues one task per WebSocket event and runs promise jobs between two tasks
// (HTML: "queue a global task on the WebSocket task source"). Node's WebSocket dispatches every
// frame of one network read back to back instead, so the AI SDK's stream processing (promise
// jobs) of a stream's last chunks would run only after the frames that followed them in that
// read, such as the transcript after a stream's end. Each event gets its own task here, in order.
const NativeWebSocket = globalThis.WebSocket;
class BrowserWebSocket extends NativeWebSocket {
  dispatchEvent(event) {
    setImmediate(() => super.dispatchEvent(event)); // immediates run in order, promise jobs between them
    return true;
  }
}
globalThis.WebSocket = BrowserWebSocket;

// `--batch-ms N`: a client too busy to read its socket for N ms at a time, whose frames that
// came meanwhile are then handled back to back in one task (as Node's own WebSocket handles
// the frames of one read), so no promise job runs between two of them.
if (args["batch-ms"]) {
  const interval = Number(args["batch-ms"]);
  const waiting = [];
  setInterval(() => {
    for (const deliver of waiting.splice(0)) deliver();
  }, interval).unref();
  globalThis.WebSocket = class BatchedWebSocket extends NativeWebSocket {
    addEventListener(type, listener, options) {
      if (type !== "message") return super.addEventListener(type, listener, options);
      return super.addEventListener(type, (event) => waiting.push(() => listener.call(this, event)), options);
    }
  };
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, predicate, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = predicate();
    if (value) return value;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

// Every cf_agent_mcp_servers state useAgent hands to the app, in order.
const mcpUpdates = [];

function Harness({ sink, chatOptions, host, name }) {
  const agent = useAgent({
    agent: args.agent,
    name,
    host,
    query: args.token ? { token: args.token } : undefined,
    onMcpUpdate: (mcp) => mcpUpdates.push(mcp),
  });
  const chat = useAgentChat({ agent, ...chatOptions });
  sink.current = { agent, chat };
  return null;
}

async function mount(chatOptions = {}, host = args.host, name = args.name, { eager = false } = {}) {
  const sink = { current: null };
  const frames = [];
  const root = createRoot(document.createElement("div"));
  root.render(React.createElement(Harness, { sink, chatOptions, host, name }));
  await waitFor("the hook to render", () => sink.current, 30000);
  sink.current.agent.addEventListener("message", (event) => {
    try {
      frames.push(JSON.parse(event.data));
    } catch {
      frames.push({ raw: String(event.data) });
    }
  });
  const sent = [];
  const socketSend = sink.current.agent.send.bind(sink.current.agent);
  sink.current.agent.send = (data) => {
    try {
      sent.push(JSON.parse(data));
    } catch {
      sent.push({ raw: String(data) });
    }
    return socketSend(data);
  };
  if (!eager) {
    await waitFor("the identity frame", () => sink.current.agent.identified, 30000);
    await waitFor("the initial transcript", () => sink.current.chat.status === "ready", 30000);
  }
  return {
    get chat() {
      return sink.current.chat;
    },
    get agent() {
      return sink.current.agent;
    },
    frames,
    sent,
    unmount: () => root.unmount(),
  };
}

async function serverMessages(name = args.name) {
  const query = args.token ? `?token=${encodeURIComponent(args.token)}` : "";
  const slug = args.agent.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/^-/, "");
  const response = await fetch(`http://${args.host}/agents/${slug}/${name}/get-messages${query}`);
  return response.json();
}

const lastAssistantText = (messages) => {
  const last = [...messages].reverse().find((m) => m.role === "assistant");
  return last ? last.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : "";
};

async function settle(client, what) {
  await sleep(50);
  await waitFor(what, () => client.chat.status === "ready" || client.chat.status === "error", 20000);
  await sleep(300); // let the final transcript broadcast land
}

// Waits until the transcript stopped changing for `quietMs` with no stream running (tool
// round trips and continuations span several streams) and `predicate` holds.
async function quiet(client, what, predicate = () => true, quietMs = 1000) {
  let previous = "";
  let since = Date.now();
  await waitFor(what, () => {
    const current = JSON.stringify(client.chat.messages);
    if (current !== previous) [previous, since] = [current, Date.now()];
    const idle = client.chat.status !== "streaming" && client.chat.status !== "submitted" && !client.chat.isServerStreaming;
    return idle && predicate() && Date.now() - since > quietMs;
  }, 25000);
}

const toolPart = (messages, toolCallId) => messages.flatMap((m) => m.parts).find((p) => p.toolCallId === toolCallId);

// Chunks of the turns' streams as they arrived (the hook keeps only the assembled message).
const streamedChunks = (client) =>
  client.frames
    .filter((f) => f.type === "cf_agent_use_chat_response" && f.body && !f.error)
    .map((f) => JSON.parse(f.body));

async function awaitApproval(client, toolCallId) {
  return waitFor("the approval request", () => {
    const part = toolPart(client.chat.messages, toolCallId);
    return part && part.state === "approval-requested" ? part : null;
  });
}

// JSON with sorted keys: the server and the client order object keys differently.
const canonical = (value) =>
  JSON.stringify(value, (_, v) => (v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort()) : v));

// One chat of a burst: mounts the official hook on its own instance name, sends one message,
// and waits until the transport closed the turn's stream (status back to ready) or gives up.
async function burstClient(name, turnTimeoutMs) {
  const began = Date.now();
  // `--eager yes` sends as soon as the hook rendered, as an app that does not wait for the
  // socket: the chat request may then overtake the hook's resume probe.
  const client = await mount({}, args.host, name, { eager: args.eager === "yes" });
  const mountedMs = Date.now() - began;
  const sent = client.sent;
  const text = args.text ?? "Hello";
  client.chat.sendMessage({ text }).catch(() => {});
  let requestId = null;
  let stuck = false;
  try {
    requestId = await waitFor("the chat request to go out", () => sent.find((f) => f.type === "cf_agent_use_chat_request")?.id, 30000);
    await waitFor(
      "the turn to end",
      () => client.chat.status === "ready" && client.frames.some((f) => f.id === requestId && f.done),
      turnTimeoutMs,
    );
  } catch {
    stuck = true;
  }
  // The transcript broadcast after the reply is persisted may still be on its way.
  const stored = await serverMessages(name);
  await waitFor("the stored transcript", () => canonical(client.chat.messages) === canonical(stored), 30000).catch(() => {});
  const result = {
    name,
    mountedMs,
    endedMs: Date.now() - began,
    requestId,
    stuck,
    status: client.chat.status,
    received: client.frames,
    sent,
    messages: client.chat.messages,
    serverMessages: stored,
  };
  client.unmount();
  client.agent.close();
  return result;
}

const scenarios = {
  async basic() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Hello" });
    await settle(client, "the turn to finish");
    return { messages: client.chat.messages, serverMessages: await serverMessages(), status: client.chat.status };
  },

  async "custom-body"() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Hello" }, { body: { echo_body: true, words: 2, foo: "bar" } });
    await settle(client, "the turn to finish");
    return { messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async cancel() {
    const client = await mount();
    client.chat.sendMessage({ text: args.text ?? "Count slowly" });
    await waitFor("the first streamed text", () => lastAssistantText(client.chat.messages).length > 0);
    await client.chat.stop();
    await sleep(800);
    return {
      messages: client.chat.messages,
      serverMessages: await serverMessages(),
      sentCancel: client.frames.length >= 0,
    };
  },

  async resume() {
    // --host2 sends the reconnect (and the --observer tab) to another server process.
    const observer = args.observer === "yes" ? await mount({}, args.host2 ?? args.host) : null;
    const first = await mount();
    first.chat.sendMessage({ text: args.text ?? "Tell me a long story" });
    await waitFor("the first streamed text", () => lastAssistantText(first.chat.messages).length > 0);
    const requestId = first.sent.find((f) => f.type === "cf_agent_use_chat_request").id;
    first.unmount();
    log("first client gone mid-stream; mounting a new one");
    const second = await mount({}, args.host2 ?? args.host);
    await waitFor("the resumed stream to finish", () => second.frames.some((f) => f.type === "cf_agent_use_chat_response" && f.done), 20000);
    await settle(second, "the resumed turn to finish");
    const streamOf = (client) => client.frames.filter((f) => f.type === "cf_agent_use_chat_response" && f.id === requestId);
    if (observer) await waitFor("the observer to see the turn end", () => streamOf(observer).some((f) => f.done), 20000);
    return {
      messages: second.chat.messages,
      serverMessages: await serverMessages(),
      replayed: second.frames.filter((f) => f.replay).length,
      resumedStream: streamOf(second),
      observerStream: observer ? streamOf(observer) : null,
    };
  },

  async "two-clients"() {
    const sender = await mount();
    const observer = await mount();
    await sender.chat.sendMessage({ text: args.text ?? "Hello both" });
    await settle(sender, "the turn to finish");
    await waitFor("the observer to see the reply", () => lastAssistantText(observer.chat.messages).length > 0);
    return { messages: sender.chat.messages, observerMessages: observer.chat.messages, serverMessages: await serverMessages() };
  },

  async clear() {
    const client = await mount();
    const other = await mount();
    await client.chat.sendMessage({ text: "Remember this" });
    await settle(client, "the turn to finish");
    await waitFor("the other tab to see the turn", () => other.chat.messages.length === 2);
    client.chat.clearHistory();
    await waitFor("the other tab to clear", () => other.chat.messages.length === 0);
    await sleep(200);
    return { messages: client.chat.messages, otherMessages: other.chat.messages, serverMessages: await serverMessages() };
  },

  async regenerate() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Hello" });
    await settle(client, "the first answer");
    const firstAnswer = client.chat.messages.at(-1);
    await client.chat.regenerate();
    await settle(client, "the regenerated answer");
    // The earlier answer is a sibling branch on the server, reachable over RPC.
    const question = client.chat.messages.at(-2);
    const branches = await client.agent.call("get_branches", [question.id]);
    return { firstAnswer, branches, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async "set-messages"() {
    const client = await mount();
    const other = await mount();
    const messages = [
      { id: "set-1", role: "user", parts: [{ type: "text", text: "one" }] },
      { id: "set-2", role: "assistant", parts: [{ type: "text", text: "two" }] },
    ];
    client.chat.setMessages(messages);
    await waitFor("the other tab to receive the list", () => other.chat.messages.length === 2);
    await sleep(200);
    return { otherMessages: other.chat.messages, serverMessages: await serverMessages() };
  },

  async overlapping() {
    // Three submits in a row while the first is still streaming: the agent's concurrency
    // strategy decides which are answered. Ends when the server has been quiet for a while.
    const client = await mount();
    client.chat.sendMessage({ text: "First" }, { body: { words: 8, delay: 0.05 } });
    await waitFor("the first streamed text", () => lastAssistantText(client.chat.messages).length > 0);
    client.chat.sendMessage({ text: "Second" }, { body: { words: 2 } });
    client.chat.sendMessage({ text: "Third" }, { body: { words: 2 } });
    let previous = "";
    let quietSince = Date.now();
    await waitFor("the server to go quiet", () => {
      const current = JSON.stringify(client.chat.messages);
      if (current !== previous) [previous, quietSince] = [current, Date.now()];
      return client.chat.status !== "streaming" && client.chat.status !== "submitted" && Date.now() - quietSince > 1500;
    }, 25000);
    return { status: client.chat.status, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async "server-tool"() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Weather in Paris?" });
    await quiet(client, "the tool turn to finish", () => lastAssistantText(client.chat.messages).length > 0);
    return { messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async "client-tool"() {
    const toolCalls = [];
    const client = await mount({
      onToolCall: async ({ toolCall, addToolOutput }) => {
        toolCalls.push(toolCall);
        addToolOutput({ toolCallId: toolCall.toolCallId, output: args.output ?? "Europe/Paris" });
      },
    });
    await client.chat.sendMessage({ text: args.text ?? "What is my time zone?" });
    await quiet(client, "the continuation to finish", () => lastAssistantText(client.chat.messages).length > 0);
    const continuations = client.frames.filter((f) => f.type === "cf_agent_use_chat_response" && f.continuation).length;
    return { toolCalls, continuations, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async approval() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Delete the file" });
    const part = await awaitApproval(client, args.call);
    const requested = structuredClone(part);
    client.chat.addToolApprovalResponse({ id: part.approval.id, approved: args.decision === "approve" });
    await quiet(client, "the answer after the decision", () => lastAssistantText(client.chat.messages).length > 0);
    return { requested, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async "approval-after-reconnect"() {
    const first = await mount();
    await first.chat.sendMessage({ text: args.text ?? "Delete the file" });
    await awaitApproval(first, args.call);
    first.unmount();
    log("first tab closed with a pending approval; a new tab approves it");
    const second = await mount();
    const part = await awaitApproval(second, args.call);
    second.chat.addToolApprovalResponse({ id: part.approval.id, approved: true });
    await quiet(second, "the answer after the approval", () => lastAssistantText(second.chat.messages).length > 0);
    return { messages: second.chat.messages, serverMessages: await serverMessages() };
  },

  async preliminary() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Count" });
    await quiet(client, "the tool turn to finish", () => lastAssistantText(client.chat.messages).length > 0);
    const preliminary = streamedChunks(client).filter((c) => c.type === "tool-output-available" && c.preliminary).map((c) => c.output);
    return { preliminary, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async "data-parts"() {
    const received = [];
    const client = await mount({ onData: (part) => received.push(part) });
    await client.chat.sendMessage({ text: args.text ?? "Annotate" });
    await quiet(client, "the tool turn to finish", () => lastAssistantText(client.chat.messages).length > 0);
    return { received, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async mcp() {
    const client = await mount();
    const added = await client.agent.call("add_server", [args.server, args.url]);
    await waitFor("the MCP server to be ready", () => mcpUpdates.at(-1)?.servers[added.id]?.state === "ready", 30000);
    await client.chat.sendMessage({ text: args.text ?? "Weather?" });
    await settle(client, "the MCP tool turn");
    return { added, updates: mcpUpdates, messages: client.chat.messages, serverMessages: await serverMessages() };
  },

  async burst() {
    // `--clients` chats opened at once, each sending one message as soon as it is ready, for
    // `--rounds` rounds (new chats every round). Every frame each socket received and every
    // frame it sent are recorded; a client that never sees its turn end is reported, not
    // awaited forever.
    const clients = Number(args.clients ?? 50);
    const rounds = Number(args.rounds ?? 1);
    const turnTimeoutMs = Number(args["turn-timeout"] ?? 20000);
    const report = [];
    for (let round = 0; round < rounds; round++) {
      const results = await Promise.all(
        Array.from({ length: clients }, (_, index) => burstClient(`${args.name}-r${round}-c${index}`, turnTimeoutMs)),
      );
      report.push(results);
      log(`round ${round}: ${results.filter((r) => r.stuck).length} stuck of ${clients}`);
    }
    return { rounds: report };
  },

  async error() {
    const client = await mount();
    await client.chat.sendMessage({ text: args.text ?? "Break" });
    await settle(client, "the failed turn");
    return { status: client.chat.status, error: client.chat.error ? client.chat.error.message : null, serverMessages: await serverMessages() };
  },
};

async function main() {
  const scenario = scenarios[args.scenario];
  if (!scenario) throw new Error(`unknown scenario ${args.scenario}; known: ${Object.keys(scenarios).join(", ")}`);
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ error: `scenario timed out after ${args.timeout}s` }));
    process.exit(3);
  }, Number(args.timeout) * 1000);
  const result = await scenario();
  clearTimeout(timer);
  // A large report outgrows the pipe buffer: exit only once it is written out.
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

main().catch((error) => {
  console.log(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }));
  process.exit(2);
});
