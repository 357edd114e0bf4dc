// The portal's own script: copy buttons (with a fallback where browsers give no clipboard),
// confirmations, upload progress, chart tooltips, tabs, and the viewer's time zone.
// Every page works without it.
"use strict";

// Pages show times in the browser's zone: the server reads it from this cookie.
(() => {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone || !/^[A-Za-z0-9_+\-\/]+$/.test(zone)) return;  // IANA names need no escaping
  const cookie = "hepai_tz=" + zone;
  if (!document.cookie.split("; ").includes(cookie)) {
    document.cookie = cookie + "; path=/; max-age=31536000; samesite=lax";
  }
  for (const field of document.querySelectorAll("input[data-zone]")) field.value = zone;
})();

function hint(message) {
  const box = document.getElementById("copy-hint");
  if (!box) return;
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(hint.timer);
  hint.timer = setTimeout(() => { box.classList.remove("shown"); }, 6000);
}

function selectText(source) {
  if (source.select) {
    source.focus();
    source.select();
    return;
  }
  const range = document.createRange();
  range.selectNodeContents(source);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// Copy: the clipboard where the browser allows it (secure origins); elsewhere (a plain-HTTP
// intranet name) the text is selected and the page says to press Ctrl+C.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = "value" in source && source.value !== undefined ? source.value : source.textContent;
  const box = document.getElementById("copy-hint");
  const mac = /Mac|iPhone|iPad/.test(navigator.platform);
  try {
    if (!navigator.clipboard) throw new Error("no clipboard");
    await navigator.clipboard.writeText(text);
  } catch {
    selectText(source);
    hint(box.dataset.hint.replace("Ctrl+C", mac ? "⌘C" : "Ctrl+C"));
    return;
  }
  const label = button.textContent;
  button.textContent = box.dataset.copied;
  hint(box.dataset.copied);
  setTimeout(() => { button.textContent = label; }, 2000);
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// A page restored from the back-forward cache must not show a one-time secret again.
window.addEventListener("pageshow", (event) => {
  if (!event.persisted) return;
  for (const secret of document.querySelectorAll("[data-secret]")) secret.value = "";
  for (const flash of document.querySelectorAll("[data-flash]")) flash.remove();
});

// Uploads show their progress; without this script the form posts the file all the same.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.matches("[data-upload]") || event.defaultPrevented) return;
  event.preventDefault();
  const progress = form.querySelector("progress");
  const status = form.querySelector("output");
  const request = new XMLHttpRequest();
  request.open("POST", form.action);
  // The redirect's page is fetched unseen: this header leaves its notice for the page shown next.
  request.setRequestHeader("X-HepAI-Upload", "1");
  request.upload.addEventListener("progress", (step) => {
    if (!step.lengthComputable) return;
    progress.hidden = false;
    progress.value = Math.round((step.loaded / step.total) * 100);
    status.textContent = progress.value + "%";
  });
  request.addEventListener("load", () => {
    if (request.status < 400) {
      window.location.assign(request.responseURL || form.action);
      return;
    }
    const page = new DOMParser().parseFromString(request.responseText, "text/html");
    const reason = page.querySelector("[role=alert]");
    status.textContent = status.dataset.failed + " " + (reason ? reason.textContent : request.status);
  });
  request.addEventListener("error", () => { status.textContent = status.dataset.failed; });
  request.send(new FormData(form));
});

// Chart tooltips: on hover and on keyboard focus, from the element's data-tip lines.
(() => {
  const tip = document.getElementById("tooltip");
  if (!tip) return;
  function show(target) {
    const lines = target.dataset.tip.split("\n");
    tip.replaceChildren(...lines.map((line, index) => {
      const row = document.createElement(index === 0 ? "strong" : "span");
      row.textContent = line;
      return row;
    }));
    tip.hidden = false;
    const box = target.getBoundingClientRect();
    const width = tip.offsetWidth;
    const left = Math.min(Math.max(8, box.left + box.width / 2 - width / 2), window.innerWidth - width - 8);
    tip.style.left = left + window.scrollX + "px";
    tip.style.top = box.top + window.scrollY - tip.offsetHeight - 8 + "px";
  }
  function hide() { tip.hidden = true; }
  for (const kind of ["mouseover", "focusin"]) {
    document.addEventListener(kind, (event) => {
      const target = event.target.closest && event.target.closest("[data-tip]");
      if (target) show(target);
    });
  }
  for (const kind of ["mouseout", "focusout"]) {
    document.addEventListener(kind, (event) => {
      if (event.target.closest && event.target.closest("[data-tip]")) hide();
    });
  }
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") hide(); });
})();

// Tabs (WAI-ARIA pattern): without this script every panel shows, each under its heading.
for (const list of document.querySelectorAll("[data-tabs]")) {
  const tabs = [...list.querySelectorAll("[role=tab]")];
  const panels = tabs.map((tab) => document.getElementById(tab.getAttribute("aria-controls")));
  list.hidden = false;
  function choose(index, focus) {
    tabs.forEach((tab, i) => {
      const chosen = i === index;
      tab.setAttribute("aria-selected", chosen ? "true" : "false");
      tab.tabIndex = chosen ? 0 : -1;
      panels[i].hidden = !chosen;
    });
    if (focus) tabs[index].focus();
  }
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => choose(index, false));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) choose((index + step + tabs.length) % tabs.length, true);
      if (event.key === "Home") choose(0, true);
      if (event.key === "End") choose(tabs.length - 1, true);
    });
  });
  for (const panel of panels) panel.classList.add("tabbed");
  choose(0, false);
}

// A chart is one stop for the keyboard: arrows move between its columns.
document.addEventListener("keydown", (event) => {
  const column = event.target.closest && event.target.closest("[data-chart] .col");
  if (!column) return;
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (!step) return;
  const columns = [...column.parentNode.querySelectorAll(".col")];
  const next = columns[columns.indexOf(column) + step];
  if (!next) return;
  event.preventDefault();
  column.tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
});

// A knowledge base's files while they are processed: their states every two seconds, and the
// page again once none is left (its counts, sizes and search then include them). Without
// this script the page's Refresh link does the same.
for (const section of document.querySelectorAll("[data-poll]")) {
  const poll = async () => {
    let answer;
    try {
      answer = await (await fetch(section.dataset.poll, { headers: { accept: "application/json" } })).json();
    } catch {
      return setTimeout(poll, 5000);
    }
    for (const [id, state] of Object.entries(answer.files)) {
      const row = section.querySelector(`[data-store-file="${CSS.escape(id)}"]`);
      if (!row) continue;
      row.dataset.status = state.status;
      row.querySelector("[data-label-text]").textContent = state.label;
      row.querySelector("[data-progress]").textContent = state.progress;
      row.querySelector("[data-error]").textContent = state.error;
    }
    if (answer.in_progress > 0) return setTimeout(poll, 2000);
    const typing = document.activeElement && document.activeElement.matches("input, textarea");
    if (!typing) window.location.reload();
  };
  setTimeout(poll, 2000);
}
