// The wdrec demo page: plain JavaScript over the public API (/v1/...), no build step, no dependency.
// Paths are relative to the page, so the app may sit under a sub-path behind a proxy.

const $ = (id) => document.getElementById(id);
const COLD_START_ID = "new-user";
const state = {
  explain: true, // ask for explanations until the server says it does not know the field
  search: 0, // sequence number of the latest user search: older answers are dropped
  task: "binary",
};

class ApiError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, body) {
  const init = { headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json"; // the server reads no body without it
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, { detail: `the server cannot be reached (${error.message})` });
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null; // not JSON: reported by status below
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// The API's error body as lines: `detail` (naming `field`), or one line per problem of a 422.
function problems(error) {
  const body = error.body || {};
  if (Array.isArray(body.detail)) {
    return body.detail.map((p) => (p.field ? `${p.field}: ${p.msg}` : String(p.msg)));
  }
  if (typeof body.detail === "string") {
    const named = body.field && !body.detail.startsWith(body.field);
    return [named ? `${body.field}: ${body.detail}` : body.detail];
  }
  return [error.status ? `the server answered HTTP ${error.status}` : String(error.message)];
}

function showError(what, error) {
  const box = $("error");
  box.replaceChildren();
  const title = el("p", "error-title", `${what} failed` + (error.status ? ` (HTTP ${error.status})` : ""));
  const list = el("ul", "error-list");
  for (const line of problems(error)) list.append(el("li", null, line));
  const close = el("button", "link", "Dismiss");
  close.type = "button";
  close.addEventListener("click", clearError);
  box.append(title, list, close);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

const number = new Intl.NumberFormat();
const signed = (v) => (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(2);

// ---- the model ------------------------------------------------------------------------------

async function loadModel() {
  try {
    const model = await api("v1/model");
    state.task = model.task;
    const box = $("model");
    box.replaceChildren(
      el("strong", null, model.name),
      el("span", "badge", model.version ? `version ${model.version}` : "unregistered"),
      el("span", "badge", model.task),
      el("span", "muted", `${number.format(model.num_users)} users · ${number.format(model.num_items)} items`),
    );
    box.dataset.version = model.version ?? "";
    coldStartFields(model);
  } catch (error) {
    $("model").textContent = "No model information.";
    showError("Loading the model", error);
  }
}

// One input per raw user column a cold start may send, typed by the model's feature list.
function coldStartFields(model) {
  const kinds = {};
  for (const f of model.features) if (f.side === "user") kinds[f.column] ??= f.kind;
  const box = $("cold-fields");
  box.replaceChildren();
  for (const column of [...new Set(model.cold_start_features)]) {
    const kind = kinds[column] || "categorical";
    const id = `cold-${column}`;
    const label = el("label", null, column);
    label.htmlFor = id;
    const input = el("input");
    input.id = id;
    input.name = column;
    input.dataset.kind = kind;
    input.autocomplete = "off";
    const hint = el("span", "hint");
    hint.id = `${id}-hint`;
    if (kind === "numeric") {
      input.type = "text";
      input.inputMode = "decimal";
      hint.textContent = "a number";
    } else if (kind === "history" || kind === "multi_hot") {
      input.type = "text";
      hint.textContent = kind === "history" ? "item ids, comma-separated" : "values, comma-separated";
    } else {
      input.type = "text";
      hint.textContent = "a value, as in the users table";
    }
    input.setAttribute("aria-describedby", hint.id);
    const row = el("div", "field");
    row.append(label, input, hint);
    box.append(row);
  }
  if (!box.children.length) box.append(el("p", "hint", "This model reads no user features: a new user gets the same list as anyone unknown."));
}

function coldStartValues() {
  const values = {};
  for (const input of $("cold-fields").querySelectorAll("input")) {
    const text = input.value.trim();
    if (!text) continue;
    const kind = input.dataset.kind;
    if (kind === "history" || kind === "multi_hot") {
      values[input.name] = text.split(",").map((v) => v.trim()).filter(Boolean);
    } else if (kind === "numeric" && text !== "" && !Number.isNaN(Number(text))) {
      values[input.name] = Number(text);
    } else {
      values[input.name] = text; // a non-number for a numeric field: the API names the problem
    }
  }
  return values;
}

// ---- finding a user -------------------------------------------------------------------------

async function searchUsers(prefix) {
  const ticket = ++state.search;
  try {
    const answer = await api(`v1/users?prefix=${encodeURIComponent(prefix)}&limit=20`);
    if (ticket !== state.search) return;
    const list = $("user-matches");
    list.replaceChildren();
    for (const id of answer.users) {
      const button = el("button", "chip", id);
      button.type = "button";
      button.dataset.userId = id;
      button.setAttribute("aria-label", `Recommend for user ${id}`);
      button.addEventListener("click", () => {
        $("user-id").value = id;
        recommend(id);
      });
      const item = el("li");
      item.append(button);
      list.append(item);
    }
    const quoted = prefix ? ` starting with “${prefix}”` : "";
    $("user-matches-note").textContent = answer.total
      ? `${number.format(answer.total)} known user${answer.total === 1 ? "" : "s"}${quoted}` +
        (answer.total > answer.users.length ? `, the first ${answer.users.length} shown` : "")
      : `No known user${quoted}: recommending for it is a cold start.`;
  } catch (error) {
    if (ticket !== state.search) return;
    $("user-matches").replaceChildren();
    $("user-matches-note").textContent = "";
    showError("Searching users", error);
  }
}

function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ---- recommendations ------------------------------------------------------------------------

function recommendBody(userId, features) {
  const k = $("k").value.trim();
  const body = { user_id: userId, k: k === "" ? 10 : Number(k), exclude_seen: $("exclude-seen").checked };
  if (features && Object.keys(features).length) body.user_features = features;
  if (state.explain) body.explain = true;
  return body;
}

// A server without explanations refuses the field (422 naming `explain`): ask again without it.
function explainRefused(error) {
  return error.status === 422 && Array.isArray(error.body?.detail) && error.body.detail.some((p) => p.field === "explain");
}

async function recommend(userId, features) {
  clearError();
  const section = $("results").closest("section");
  section.setAttribute("aria-busy", "true");
  $("results-note").textContent = "Loading…";
  try {
    let answer;
    try {
      answer = await api("v1/recommend", recommendBody(userId, features));
    } catch (error) {
      if (!state.explain || !explainRefused(error)) throw error;
      state.explain = false;
      answer = await api("v1/recommend", recommendBody(userId, features));
    }
    renderRecommendations(answer, features);
    $("results-heading").focus(); // keyboard and screen-reader users land on the list; a phone scrolls to it
  } catch (error) {
    $("results-note").textContent = "No recommendations.";
    $("results").replaceChildren();
    showError("Recommending", error);
  } finally {
    section.removeAttribute("aria-busy");
  }
}

function renderRecommendations(answer, features) {
  const who = answer.cold_start && features && Object.keys(features).length ? "a new user" : `user ${answer.user_id}`;
  $("results-heading").textContent = `Top ${answer.items.length} for ${who}`;
  const notes = [answer.cold_start ? "cold start: not a known user, scored from the features sent" : "a known user"];
  if (answer.model_version) notes.push(`model version ${answer.model_version}`);
  if (!state.explain) notes.push("this server gives no explanations");
  $("results-note").textContent = notes.join(" · ");
  const list = $("results");
  list.replaceChildren(...answer.items.map((item, i) => itemCard(item, i === 0)));
  list.dataset.userId = answer.user_id;
}

const SHOWN = new Set(["item_id", "score", "title", "genres", "explanation", "release_year"]);

function itemCard(item, open) {
  const card = el("li", "item");
  card.dataset.itemId = item.item_id;
  const head = el("div", "item-head");
  const title = el("div", "title");
  title.append(el("strong", null, item.title ?? `item ${item.item_id}`));
  if (item.release_year != null) title.append(el("span", "muted", ` (${item.release_year})`));
  head.append(title, scoreBadge(item.score));
  card.append(head);

  const genres = Array.isArray(item.genres) ? item.genres : item.genres ? [item.genres] : [];
  if (genres.length) {
    const tags = el("ul", "tags");
    tags.setAttribute("aria-label", "genres");
    for (const g of genres) tags.append(el("li", "tag", g));
    card.append(tags);
  }
  const extra = Object.entries(item).filter(([k, v]) => !SHOWN.has(k) && v !== null && typeof v !== "object");
  if (extra.length) card.append(el("p", "muted small", extra.map(([k, v]) => `${k}: ${v}`).join(" · ")));

  const actions = el("div", "actions");
  const similar = el("button", "secondary", "Similar items");
  similar.type = "button";
  similar.dataset.itemId = item.item_id;
  similar.setAttribute("aria-controls", "similar");
  similar.setAttribute("aria-label", `Items similar to ${item.title ?? item.item_id}`);
  similar.addEventListener("click", () => showSimilar(item));
  actions.append(similar, el("span", "muted small", `id ${item.item_id}`));
  card.append(actions);
  if (item.explanation) card.append(explanation(item.explanation, open));
  return card;
}

function scoreBadge(score) {
  const box = el("div", "score");
  const value = typeof score === "number" ? score : Number.NaN;
  box.append(el("span", "score-value", Number.isFinite(value) ? value.toFixed(3) : "–"));
  if (state.task === "binary" && Number.isFinite(value)) {
    const bar = el("span", "score-bar");
    bar.setAttribute("aria-hidden", "true");
    const fill = el("span");
    fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
    bar.append(fill);
    box.append(bar);
  }
  box.title = state.task === "binary" ? "probability of interaction" : "predicted rating";
  return box;
}

// The explanation: each term's contribution to the logit, as a bar either side of zero.
function explanation(ex, open) {
  const box = el("details", "why");
  box.open = open;
  box.append(el("summary", null, `Why? logit ${signed(ex.logit)}`));
  const rows = [...ex.terms];
  if (typeof ex.rest === "number") rows.push({ name: "everything else", value: ex.rest, kind: "rest" });
  const scale = Math.max(1e-9, ...rows.map((t) => Math.abs(t.value)));
  const table = el("table", "terms");
  const caption = el("caption", "sr-only", "Contribution of each feature to the logit");
  const head = el("thead");
  const headRow = el("tr");
  for (const name of ["term", "part", "contribution", "value"]) headRow.append(el("th", null, name));
  head.append(headRow);
  const body = el("tbody");
  for (const t of rows) {
    const row = el("tr", `term ${t.kind}`);
    row.append(el("td", "term-name", t.name), el("td", "term-kind", t.kind));
    const cell = el("td", "term-bar");
    cell.setAttribute("aria-hidden", "true");
    const track = el("span", "track");
    const bar = el("span", t.value >= 0 ? "bar pos" : "bar neg");
    const width = (Math.abs(t.value) / scale) * 50;
    bar.style.width = `${width}%`;
    bar.style.left = t.value >= 0 ? "50%" : `${50 - width}%`;
    track.append(bar);
    cell.append(track);
    row.append(cell, el("td", "term-value", signed(t.value)));
    body.append(row);
  }
  table.append(caption, head, body);
  box.append(table);
  return box;
}

// ---- similar items --------------------------------------------------------------------------

async function showSimilar(item) {
  clearError();
  const name = item.title ?? `item ${item.item_id}`;
  const section = $("similar").closest("section");
  section.setAttribute("aria-busy", "true");
  $("similar-heading").textContent = `Similar to ${name}`;
  $("similar-note").textContent = "Loading…";
  try {
    const answer = await api(`v1/items/${encodeURIComponent(item.item_id)}/similar?k=10`);
    const notes = [answer.method ? `by ${answer.method}` : null, answer.model_version ? `model version ${answer.model_version}` : null];
    $("similar-note").textContent = notes.filter(Boolean).join(" · ") || `${answer.items.length} items`;
    $("similar").replaceChildren(...answer.items.map((other) => itemCard(other, false)));
    $("similar").dataset.itemId = answer.item_id;
  } catch (error) {
    $("similar-note").textContent = "No similar items.";
    $("similar").replaceChildren();
    showError(`Finding items similar to ${name}`, error);
  } finally {
    section.removeAttribute("aria-busy");
  }
  $("similar-heading").focus();
}

// ---- wiring ---------------------------------------------------------------------------------

function start() {
  const search = debounce((value) => searchUsers(value), 150);
  $("user-id").addEventListener("input", (event) => search(event.target.value.trim()));
  $("known-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("user-id").value.trim();
    if (!id) {
      showError("Recommending", new ApiError(0, { detail: "enter a user id, or pick one of the known users" }));
      return;
    }
    recommend(id);
  });
  $("cold-form").addEventListener("submit", (event) => {
    event.preventDefault();
    recommend(COLD_START_ID, coldStartValues());
  });
  document.body.dataset.ready = "false";
  Promise.all([loadModel(), searchUsers("")]).finally(() => {
    document.body.dataset.ready = "true";
  });
}

start();
