// The chat page: sends the conversation to /v1/chat/completions with "stream": true and paints the
// reply as its server-sent events arrive. No libraries; Stop aborts the request, which makes the
// server drop the generation.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, history: [], controller: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
  document.body.dataset.busy = on ? "1" : "";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error && body.error.message ? body.error.message : response.statusText;
  } catch (e) {
    return response.statusText;
  }
}

async function connect() {
  try {
    const health = await (await fetch("/health")).json();
    $("key-row").hidden = !health.auth;
    if (health.auth && !$("api-key").value) $("settings").open = true; // the key has to be entered first
    state.model = health.model;
    $("model").textContent = health.model + (health.kind === "classify" ? " (a classifier: chat is not available)" : "");
  } catch (e) {
    $("model").textContent = "server unreachable";
  }
}

// Reads a text/event-stream body and calls onData with each parsed "data:" payload.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  state.history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  out.classList.add("streaming");
  busy(true);
  $("status").textContent = "generating…";
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.history);
  const body = {
    model: state.model || undefined,
    messages,
    stream: true,
    max_tokens: Number($("max-tokens").value) || undefined,
    temperature: Number($("temperature").value),
  };
  state.controller = new AbortController();
  let reply = "";
  let finish = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(response.status + ": " + (await errorText(response)));
    await readEvents(response, (event) => {
      if (event.error) throw new Error(event.error.message);
      const choice = event.choices && event.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        out.textContent = reply;
        out.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    state.history.push({ role: "assistant", content: reply });
    $("status").textContent = finish === "length" ? "reply cut at the token limit" : "";
  } catch (e) {
    if (e.name === "AbortError") {
      state.history.push({ role: "assistant", content: reply });
      $("status").textContent = "stopped";
    } else {
      state.history.pop();
      out.remove();
      bubble("error", String(e.message || e));
      $("status").textContent = "";
    }
  } finally {
    out.classList.remove("streaming");
    out.dataset.done = "1";
    if (finish) out.dataset.finish = finish;
    state.controller = null;
    busy(false);
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || state.controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("reset").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("log").textContent = "";
  $("status").textContent = "";
});
connect();
