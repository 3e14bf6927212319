// One UIMessage, part by part: text, reasoning, tool calls (with approval buttons), data
// parts, sources; and the "‹ 2/3 ›" pager the server's `metadata.branch` describes.

export function Message({ message, streaming, onSwitchBranch, onApproval }) {
  return (
    <li className={`message ${message.role}`} data-role={message.role} data-streaming={streaming ? "yes" : "no"}>
      <div className="who">{message.role === "user" ? "You" : "Assistant"}</div>
      {message.parts.map((part, index) => (
        <Part key={index} part={part} onApproval={onApproval} />
      ))}
      <BranchPager branch={message.metadata?.branch} onSwitch={onSwitchBranch} />
    </li>
  );
}

function Part({ part, onApproval }) {
  if (part.type === "text") return <p className="text">{part.text}</p>;
  if (part.type === "reasoning") {
    return (
      <details className="reasoning" open={part.state === "streaming"}>
        <summary>Thinking</summary>
        <p>{part.text}</p>
      </details>
    );
  }
  if (part.type === "source-url") {
    return (
      <a className="source" href={part.url} target="_blank" rel="noreferrer">
        {part.title || part.url}
      </a>
    );
  }
  if (part.type.startsWith("tool-") || part.type === "dynamic-tool") return <ToolCard part={part} onApproval={onApproval} />;
  if (part.type.startsWith("data-")) return <DataPart part={part} />;
  return null; // step boundaries and parts this app does not draw
}

const TOOL_STATES = {
  "input-streaming": "preparing…",
  "input-available": "running…",
  "approval-requested": "needs your approval",
  "approval-responded": "answered",
  "output-available": "done",
  "output-error": "failed",
  "output-denied": "denied",
};

function ToolCard({ part, onApproval }) {
  const name = part.type === "dynamic-tool" ? part.toolName : part.type.slice("tool-".length);
  return (
    <div className="tool" data-tool={name} data-state={part.state}>
      <div className="tool-head">
        <strong>{name}</strong> <span className="tool-state">{TOOL_STATES[part.state] ?? part.state}</span>
        {part.preliminary ? <span className="tool-state"> (in progress)</span> : null}
      </div>
      {part.input !== undefined ? <pre className="tool-input">{JSON.stringify(part.input, null, 2)}</pre> : null}
      {part.state === "approval-requested" ? (
        <div className="approval">
          <button type="button" className="approve" onClick={() => onApproval(part.approval.id, true)}>
            Approve
          </button>
          <button type="button" className="deny" onClick={() => onApproval(part.approval.id, false)}>
            Deny
          </button>
        </div>
      ) : null}
      {part.state === "output-available" ? <pre className="tool-output">{JSON.stringify(part.output, null, 2)}</pre> : null}
      {part.state === "output-error" ? <p className="error">{part.errorText}</p> : null}
    </div>
  );
}

function DataPart({ part }) {
  const kind = part.type.slice("data-".length);
  if (kind === "progress") {
    return (
      <div className="data progress" data-kind={kind}>
        <progress max="100" value={part.data.percent ?? 0} /> {part.data.status}
      </div>
    );
  }
  if (kind === "citation") {
    return (
      <a className="data citation" data-kind={kind} href={part.data.url} target="_blank" rel="noreferrer">
        {part.data.title || part.data.url}
      </a>
    );
  }
  return (
    <pre className="data" data-kind={kind}>
      {kind}: {JSON.stringify(part.data)}
    </pre>
  );
}

function BranchPager({ branch, onSwitch }) {
  if (!branch || branch.count < 2) return null;
  const go = (offset) => onSwitch(branch.siblings[branch.index + offset]);
  return (
    <nav className="branches" aria-label="Versions">
      <button type="button" className="older" disabled={branch.index === 0} onClick={() => go(-1)}>
        ‹
      </button>
      <span className="position">
        {branch.index + 1}/{branch.count}
      </span>
      <button type="button" className="newer" disabled={branch.index === branch.count - 1} onClick={() => go(1)}>
        ›
      </button>
    </nav>
  );
}
