// The playground: calls /playground/v1 with the session (never an API key) and shows answers
// as they stream. Reasoning, when a model sends it, is shown apart from the answer.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const history = [];

async function call(path, body) {
  const response = await fetch("/playground/v1" + path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch { /* not JSON */ }
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

function bubble(list, role, label) {
  const item = document.createElement("li");
  item.className = "turn " + role;
  const who = document.createElement("strong");
  who.textContent = label;
  item.append(who);
  list.append(item);
  return item;
}

const chatForm = document.getElementById("chat-form");
if (chatForm) {
  const list = document.getElementById("conversation");
  const status = document.getElementById("chat-status");
  document.getElementById("chat-clear").addEventListener("click", () => {
    history.length = 0;
    list.replaceChildren();
    status.textContent = "";
  });
  chatForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = chatForm.prompt.value.trim();
    if (!prompt) return;
    let content = prompt;
    const image = chatForm.image.files[0];
    const asked = bubble(list, "user", list.dataset.you);
    asked.append(document.createTextNode(prompt));
    if (image) {
      const url = await readFile(image, "dataURL");
      content = [{ type: "text", text: prompt }, { type: "image_url", image_url: { url } }];
      const preview = document.createElement("img");
      preview.src = url;
      preview.alt = image.name;
      asked.append(preview);
    }
    history.push({ role: "user", content });
    chatForm.prompt.value = "";
    chatForm.image.value = "";
    const answer = bubble(list, "assistant", list.dataset.assistant);
    const thinking = document.createElement("details");
    thinking.className = "reasoning";
    thinking.hidden = true;
    thinking.open = true;
    const summary = document.createElement("summary");
    summary.textContent = list.dataset.reasoning;
    const thoughts = document.createElement("div");
    thinking.append(summary, thoughts);
    const text = document.createElement("div");
    text.className = "content";
    answer.append(thinking, text);
    status.textContent = "";
    let reply = "";
    try {
      const response = await call("/chat/completions", {
        model: chatForm.model.value,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
      });
      for await (const chunk of events(response)) {
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
        const reasoning = delta.reasoning_content || delta.reasoning;
        if (reasoning) {
          thinking.hidden = false;
          thoughts.textContent += reasoning;
        }
        if (delta.content) {
          reply += delta.content;
          text.textContent = reply;
        }
        if (chunk.usage) {
          status.textContent = chunk.usage.prompt_tokens + " + " + chunk.usage.completion_tokens + " tokens";
        }
      }
      history.push({ role: "assistant", content: reply });
    } catch (error) {
      answer.classList.add("failed");
      text.textContent = error.message;
      history.pop();
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
      status.textContent = vectors[0].length + " dimensions · " + answer.usage.total_tokens + " tokens";
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
