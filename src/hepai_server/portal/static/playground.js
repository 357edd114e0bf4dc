// The playground: calls /playground/v1 with the session (never an API key) and shows answers
// as they stream, as Markdown with code and formulas. Reasoning, when a model sends it, is shown
// apart from the answer. Two models may answer side by side; Stop ends the answers under way.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

// What a failed call says, in the page's language, by its status: a Chinese page shows the
// catalog's words, never the server's English.
const callErrors = JSON.parse(document.querySelector('meta[name="call-errors"]').content);

function failure(status) {
  return callErrors[String(status)] || callErrors[status >= 500 ? "5xx" : "other"];
}

async function call(path, body, signal) {
  const response = await fetch("/playground/v1" + path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    let message = failure(response.status);
    // An English page may show the server's own (English) words, which say more.
    if (document.documentElement.lang === "en") {
      try { message = (await response.json()).error.message || message; } catch { /* not JSON */ }
    }
    throw new Error(message);
  }
  return response;
}

// Server-sent events from a fetch body: yields each parsed `data:` payload until [DONE].
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function readFile(file, how) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    if (how === "dataURL") reader.readAsDataURL(file); else reader.readAsArrayBuffer(file);
  });
}

// Replies are Markdown (raw HTML in them is shown as text, never run), with code highlighted
// and LaTeX ($…$, $$…$$, \(…\), \[…\]) typeset by KaTeX into the page's own elements.
const markdown = window.markdownit ? window.markdownit({
  html: false,
  linkify: true,
  highlight(code, language) {
    if (window.hljs && language && window.hljs.getLanguage(language)) {
      return window.hljs.highlight(code, { language, ignoreIllegals: true }).value;
    }
    return "";
  },
}) : null;
const MATH = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|\$([^$\n]+?)\$/g;

function render(target, text) {
  if (!markdown) {
    target.textContent = text;
    return;
  }
  // Math is set aside first (Markdown would read its _ and * as emphasis), outside code only.
  const formulas = [];
  const parts = text.split(/(```[\s\S]*?(?:```|$)|`[^`\n]*`)/);
  const source = parts.map((part, index) => index % 2 ? part : part.replace(MATH, (_all, a, b, c, d) => {
    const display = a !== undefined || b !== undefined;
    formulas.push({ tex: a ?? b ?? c ?? d, display });
    return display ? "\n\nKATEXMATH" + (formulas.length - 1) + "X\n\n" : "KATEXMATH" + (formulas.length - 1) + "X";
  })).join("");
  target.innerHTML = markdown.render(source);
  if (!formulas.length || !window.katex) return;
  const walker = document.createTreeWalker(target, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) if (walker.currentNode.nodeValue.includes("KATEXMATH")) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const pieces = node.nodeValue.split(/KATEXMATH(\d+)X/);
    const fragment = document.createDocumentFragment();
    pieces.forEach((piece, index) => {
      if (index % 2 === 0) {
        if (piece) fragment.append(document.createTextNode(piece));
        return;
      }
      const formula = formulas[Number(piece)];
      const holder = document.createElement(formula.display ? "div" : "span");
      holder.className = "math";
      // render() builds elements and sets their styles through the DOM, which the page's
      // Content-Security-Policy allows (inline style attributes it would refuse).
      window.katex.render(formula.tex, holder, { displayMode: formula.display, throwOnError: false });
      fragment.append(holder);
    });
    node.replaceWith(fragment);
  }
}

function bubble(list, role, label) {
  const item = document.createElement("li");
  item.className = "turn " + role;
  const who = document.createElement("strong");
  who.textContent = label;
  item.append(who);
  list.append(item);
  return item;
}

function numberField(form, name) {
  const value = form[name].value.trim();
  return value === "" ? undefined : Number(value);
}

const chatForm = document.getElementById("chat-form");
if (chatForm) {
  const panes = document.getElementById("panes");
  const lists = [document.getElementById("conversation"), document.getElementById("conversation-2")];
  const histories = [[], []];
  const status = document.getElementById("chat-status");
  const send = document.getElementById("chat-send");
  const stop = document.getElementById("chat-stop");
  const codeButton = document.getElementById("chat-code");
  const codeView = document.getElementById("code-view");
  let running = [];

  function models() {
    const chosen = [chatForm.model.value];
    if (chatForm.compare.value) chosen.push(chatForm.compare.value);
    return chosen;
  }

  // The request exactly as the page sends it (with the key the API wants instead of the session).
  function request(model, history) {
    const messages = [];
    const system = chatForm.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    const body = { model, messages: messages.concat(history), stream: true, stream_options: { include_usage: true } };
    for (const name of ["temperature", "max_tokens", "top_p"]) {
      const value = numberField(chatForm, name);
      if (value !== undefined) body[name] = value;
    }
    return body;
  }

  function showCode() {
    const next = chatForm.prompt.value.trim();
    const history = histories[0].concat(next ? [{ role: "user", content: next }] : []);
    const body = request(chatForm.model.value, history);
    const json = JSON.stringify(body, null, 2);
    const url = chatForm.dataset.baseUrl;
    document.getElementById("request-code-curl").textContent =
      "curl " + url + "/chat/completions \\\n  -H \"Authorization: Bearer $HEPAI_API_KEY\" \\\n" +
      "  -H \"Content-Type: application/json\" \\\n  -d '" + json.replace(/'/g, "'\\''") + "'";
    const python = json.replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None");
    document.getElementById("request-code-openai").textContent =
      "import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=" + JSON.stringify(url) +
      ", api_key=os.environ[\"HEPAI_API_KEY\"])\nrequest = " + python +
      "\nfor chunk in client.chat.completions.create(**request):\n" +
      "    if chunk.choices:\n        print(chunk.choices[0].delta.content or \"\", end=\"\")\n";
  }

  codeButton.addEventListener("click", () => {
    const open = codeView.hidden;
    if (open) showCode();
    codeView.hidden = !open;
    codeButton.setAttribute("aria-expanded", open ? "true" : "false");
  });
  chatForm.addEventListener("input", () => { if (!codeView.hidden) showCode(); });
  chatForm.compare.addEventListener("change", () => {
    lists[1].hidden = !chatForm.compare.value;
    panes.classList.toggle("compare", Boolean(chatForm.compare.value));
  });

  // Enter sends; Shift+Enter (or an input method still composing) makes a new line.
  chatForm.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      chatForm.requestSubmit();
    }
  });
  document.getElementById("chat-clear").addEventListener("click", () => {
    histories.forEach((history) => { history.length = 0; });
    lists.forEach((list) => list.replaceChildren());
    status.textContent = "";
  });
  stop.addEventListener("click", () => running.forEach((controller) => controller.abort()));

  async function answer(pane, model, userContent) {
    const list = lists[pane];
    const history = histories[pane];
    history.push({ role: "user", content: userContent });
    const item = bubble(list, "assistant", panes.dataset.assistant + " · " + model);
    const thinking = document.createElement("details");
    thinking.className = "reasoning";
    thinking.hidden = true;
    thinking.open = true;
    const summary = document.createElement("summary");
    summary.textContent = panes.dataset.reasoning;
    const thoughts = document.createElement("div");
    thinking.append(summary, thoughts);
    const text = document.createElement("div");
    text.className = "content markdown-body";
    item.append(thinking, text);
    const controller = new AbortController();
    running.push(controller);
    let reply = "";
    let frame = 0;
    try {
      const response = await call("/chat/completions", request(model, history), controller.signal);
      for await (const chunk of events(response)) {
        if (chunk.error) throw new Error(failure(502));
        const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
        const reasoning = delta.reasoning_content || delta.reasoning;
        if (reasoning) {
          thinking.hidden = false;
          thoughts.textContent += reasoning;
        }
        if (delta.content) {
          reply += delta.content;
          if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(text, reply); });
        }
        if (chunk.usage) {
          status.textContent = panes.dataset.tokens
            .replace("{prompt}", chunk.usage.prompt_tokens).replace("{completion}", chunk.usage.completion_tokens);
        }
      }
      cancelAnimationFrame(frame);
      render(text, reply);
      history.push({ role: "assistant", content: reply });
    } catch (error) {
      cancelAnimationFrame(frame);
      if (error.name === "AbortError") {
        render(text, reply);
        const note = document.createElement("p");
        note.className = "muted";
        note.textContent = panes.dataset.stopped;
        item.append(note);
        history.push({ role: "assistant", content: reply });
      } else {
        item.classList.add("failed");
        text.textContent = error.message;
        history.pop();
      }
    }
  }

  chatForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = chatForm.prompt.value.trim();
    if (!prompt || running.length) return;
    let content = prompt;
    const image = chatForm.image.files[0];
    const chosen = models();
    let url = null;
    if (image) url = await readFile(image, "dataURL");
    chosen.forEach((_model, pane) => {
      const asked = bubble(lists[pane], "user", panes.dataset.you);
      const words = document.createElement("div");
      words.className = "content";
      words.textContent = prompt;
      asked.append(words);
      if (url) {
        const preview = document.createElement("img");
        preview.src = url;
        preview.alt = image.name;
        asked.append(preview);
      }
    });
    if (url) content = [{ type: "text", text: prompt }, { type: "image_url", image_url: { url } }];
    chatForm.prompt.value = "";
    chatForm.image.value = "";
    status.textContent = "";
    send.disabled = true;
    stop.disabled = false;
    try {
      await Promise.all(chosen.map((model, pane) => answer(pane, model, content)));
    } finally {
      running = [];
      send.disabled = false;
      stop.disabled = true;
      if (!codeView.hidden) showCode();
      chatForm.prompt.focus();
    }
  });
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

const embedForm = document.getElementById("embed-form");
if (embedForm) {
  embedForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("embed-status");
    const table = document.getElementById("embed-result");
    const texts = lines(embedForm.texts.value);
    status.textContent = "";
    try {
      const answer = await (await call("/embeddings", { model: embedForm.model.value, input: texts })).json();
      const vectors = answer.data.map((item) => item.embedding);
      const body = table.tBodies[0];
      body.replaceChildren();
      texts.forEach((text, index) => {
        const row = body.insertRow();
        row.insertCell().textContent = text;
        const score = row.insertCell();
        score.className = "num";
        score.textContent = cosine(vectors[0], vectors[index]).toFixed(3);
      });
      table.hidden = false;
      status.textContent = status.dataset.done
        .replace("{dimensions}", vectors[0].length).replace("{tokens}", answer.usage.total_tokens);
    } catch (error) {
      status.textContent = error.message;
    }
  });
}

const rerankForm = document.getElementById("rerank-form");
if (rerankForm) {
  rerankForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("rerank-status");
    const list = document.getElementById("rerank-result");
    const documents = lines(rerankForm.documents.value);
    status.textContent = "";
    try {
      const answer = await (await call("/rerank", {
        model: rerankForm.model.value, query: rerankForm.query.value, documents,
      })).json();
      list.replaceChildren(...answer.results.map((result) => {
        const item = document.createElement("li");
        item.textContent = documents[result.index] + " — " + result.relevance_score.toFixed(3);
        return item;
      }));
    } catch (error) {
      status.textContent = error.message;
    }
  });
}

const convertForm = document.getElementById("convert-form");
if (convertForm) {
  convertForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("convert-status");
    const result = document.getElementById("convert-result");
    const file = convertForm.file.files[0];
    if (!file) return;
    status.textContent = status.dataset.working;
    result.hidden = true;
    try {
      const bytes = new Uint8Array(await readFile(file, "buffer"));
      let binary = "";
      for (let i = 0; i < bytes.length; i += 0x8000) {
        binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      const query = new URLSearchParams({ model: convertForm.model.value, function: "interface" });
      const answer = await call("/worker/unified_gate?" + query, {
        args: [], kwargs: { file_base64: btoa(binary), file_name: file.name },
      });
      const markdown = await answer.json();
      result.textContent = typeof markdown === "string" ? markdown : JSON.stringify(markdown, null, 2);
      result.hidden = false;
      status.textContent = "";
    } catch (error) {
      status.textContent = error.message;
    }
  });
}

// The forms only work through this script: their buttons start disabled, so nothing sent before
// it has loaded can fall through to a plain form submission and lose what was typed.
for (const button of document.querySelectorAll(".play-form button[type=submit]")) {
  button.disabled = false;
}
