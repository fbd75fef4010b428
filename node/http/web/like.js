// The like page: optimistic like buttons, an offline queue, live counts over SSE. No build step.
//
// Every change the visitor makes is first written to a queue in localStorage (one entry per item,
// holding the state the visitor wants), shown at once, and sent when the browser is online. An entry
// leaves the queue only when the node has acknowledged it, so a like made offline, or one whose page
// was closed mid-request, is sent when the network is back; PUT and DELETE are idempotent, so sending
// an entry twice still counts one like. A request the node refuses (4xx, 5xx) or that cannot reach it
// while the browser believes it is online is rolled back with a message.
"use strict";

(() => {
  const USER_KEY = "likes-user";
  const TOKEN_KEY = "likes-token";
  const QUEUE_KEY = "likes-queue";
  const LIKERS_PAGE = 10;
  const MAX_PAGES = 20;
  const RETRY_QUEUE_MS = 5000;
  const RECONNECT_MS = 5000;

  const $ = (selector, root = document) => root.querySelector(selector);
  const alertBox = $("#alert");
  const statusLine = $("#status");
  const tokenForm = $("#token-form");
  const live = $("#live");

  const user = visitorId();
  const posts = new Map(); // "type:id" -> the post's state and elements
  const sending = new Set(); // queue keys with a request in flight
  let events = null; // the live stream (EventSource)

  // -- storage -----------------------------------------------------------------------------------

  /** The visitor's user id: random, kept in this browser. 48 bits stay exact in a JS number. */
  function visitorId() {
    let id = localStorage.getItem(USER_KEY);
    if (!id || !/^[0-9]{1,15}$/.test(id)) {
      id = String(Math.floor(Math.random() * 2 ** 48));
      localStorage.setItem(USER_KEY, id);
    }
    return id;
  }

  /** The queue, read fresh each time, so a second tab's changes are not overwritten. */
  function loadQueue() {
    try {
      const queue = JSON.parse(localStorage.getItem(QUEUE_KEY) || "{}");
      return queue && typeof queue === "object" && !Array.isArray(queue) ? queue : {};
    } catch {
      return {};
    }
  }

  function saveQueue(queue) {
    if (Object.keys(queue).length === 0) localStorage.removeItem(QUEUE_KEY);
    else localStorage.setItem(QUEUE_KEY, JSON.stringify(queue));
  }

  function queueKey(post) {
    return `${post.key}:${user}`;
  }

  /** Drop the entry of ``key`` if it still asks for ``liked`` (a newer click keeps its own). */
  function acknowledge(key, liked) {
    const queue = loadQueue();
    if (queue[key] && queue[key].liked === liked) {
      delete queue[key];
      saveQueue(queue);
    }
  }

  function forget(key) {
    const queue = loadQueue();
    delete queue[key];
    saveQueue(queue);
  }

  function authHeaders() {
    const token = localStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  // -- showing -----------------------------------------------------------------------------------

  function wanted(post) {
    const entry = loadQueue()[queueKey(post)];
    return entry ? entry.liked : post.serverLiked;
  }

  function render(post) {
    const want = wanted(post);
    post.button.setAttribute("aria-pressed", String(want));
    if (post.serverCount !== null) {
      const shown = Math.max(0, post.serverCount + Number(want) - Number(post.serverLiked));
      post.count.textContent = String(shown);
      post.countLabel.textContent = shown === 1 ? "like" : "likes";
    }
    const queued = loadQueue()[queueKey(post)] !== undefined;
    post.pending.textContent = !queued ? "" : navigator.onLine ? "saving…" : "queued (offline)";
  }

  function renderAll() {
    posts.forEach(render);
    const waiting = Object.keys(loadQueue()).length;
    const changes = `${waiting} ${waiting === 1 ? "change" : "changes"}`;
    if (waiting && !navigator.onLine) {
      setStatus("offline", `You are offline: ${changes} will be sent when the connection is back.`);
    } else if (waiting && statusLine.dataset.kind === "offline") {
      setStatus("offline", `Back online: sending ${changes}…`);
    } else if (!waiting && statusLine.dataset.kind === "offline") {
      setStatus("", "Back online: every queued change is saved.");
    }
  }

  /** The polite status line; ``kind`` "offline" while queued changes wait for the network. */
  function setStatus(kind, text) {
    statusLine.dataset.kind = kind;
    statusLine.textContent = text;
  }

  function showAlert(message) {
    alertBox.textContent = message;
    alertBox.hidden = false;
  }

  function clearAlert() {
    alertBox.hidden = true;
    alertBox.textContent = "";
  }

  // -- sending -----------------------------------------------------------------------------------

  function toggle(post) {
    const liked = !wanted(post);
    const queue = loadQueue();
    queue[queueKey(post)] = { type: post.type, id: post.id, user, liked };
    saveQueue(queue);
    clearAlert();
    renderAll();
    flush();
  }

  /** Send every queued entry that has no request in flight; nothing while offline. */
  function flush() {
    if (!navigator.onLine) {
      renderAll();
      return;
    }
    for (const [key, entry] of Object.entries(loadQueue())) {
      if (!sending.has(key)) send(key, entry);
    }
    renderAll();
  }

  async function send(key, entry) {
    const post = posts.get(`${entry.type}:${entry.id}`);
    const path = `/v1/items/${encodeURIComponent(entry.type)}/${encodeURIComponent(entry.id)}/likes/${encodeURIComponent(entry.user)}`;
    sending.add(key);
    let reply;
    let body = null;
    try {
      reply = await fetch(path, { method: entry.liked ? "PUT" : "DELETE", headers: authHeaders() });
      body = await reply.json().catch(() => null);
    } catch (error) {
      sending.delete(key);
      if (!navigator.onLine) {
        renderAll(); // stays queued; the "online" event sends it
        return;
      }
      fail(key, entry, post, "the node could not be reached");
      return;
    }
    sending.delete(key);
    if (reply.ok) {
      if (post && body) {
        post.serverLiked = Boolean(body.liked);
        post.serverCount = Number(body.count);
      }
      acknowledge(key, entry.liked);
      if (loadQueue()[key]) flush(); // clicked again meanwhile: send the newer wish
      renderAll();
      return;
    }
    fail(key, entry, post, reason(reply, body));
  }

  function reason(reply, body) {
    const detail = body && body.error && body.error.message ? ` (${body.error.message})` : "";
    switch (reply.status) {
      case 401:
        tokenForm.hidden = false;
        return localStorage.getItem(TOKEN_KEY)
          ? "the saved API token was refused; paste another one below"
          : "this node needs an API token for likes; paste one below";
      case 429: {
        const wait = reply.headers.get("Retry-After");
        return `too many likes too quickly; try again${wait ? ` in ${wait} s` : " shortly"}`;
      }
      case 503:
        return `the node could not save it right now${detail}`;
      default:
        return `the node answered ${reply.status}${detail}`;
    }
  }

  /** Roll the post back to what the node last said, tell the visitor, and ask the node again. */
  function fail(key, entry, post, why) {
    forget(key);
    if (statusLine.dataset.kind === "offline") setStatus("", ""); // not "every change is saved"
    const title = post ? post.title : `${entry.type}/${entry.id}`;
    showAlert(`Could not ${entry.liked ? "like" : "unlike"} “${title}”: ${why}. Nothing was changed.`);
    renderAll();
    if (post) refresh(post);
  }

  // -- reading -----------------------------------------------------------------------------------

  async function getJson(path) {
    const reply = await fetch(path, { headers: { Accept: "application/json" } });
    if (!reply.ok) throw new Error(`${path}: ${reply.status}`);
    return reply.json();
  }

  async function refresh(post) {
    try {
      const [item, mine] = await Promise.all([
        getJson(`/v1/items/${post.type}/${post.id}`),
        getJson(`/v1/items/${post.type}/${post.id}/likes/${user}`),
      ]);
      post.serverCount = item.count;
      post.serverLiked = mine.liked;
      render(post);
    } catch {
      // the live stream or the next refresh will bring the truth
    }
  }

  async function loadLikers(post, more) {
    const after = more && post.likersNext ? `&after=${encodeURIComponent(post.likersNext)}` : "";
    try {
      const answer = await getJson(`/v1/items/${post.type}/${post.id}/likes?limit=${LIKERS_PAGE}${after}`);
      if (!more) post.likers.replaceChildren();
      for (const liker of answer.likers) {
        const li = document.createElement("li");
        const mine = String(liker) === user;
        li.textContent = mine ? `${liker} (you)` : String(liker);
        li.classList.toggle("me", mine);
        post.likers.append(li);
      }
      if (!post.likers.children.length) {
        const li = document.createElement("li");
        li.textContent = "nobody yet";
        post.likers.append(li);
      }
      post.likersNext = answer.next;
      post.more.hidden = answer.next === null;
    } catch {
      post.more.hidden = true;
    }
  }

  // -- live counts -------------------------------------------------------------------------------

  function follow() {
    const query = [...posts.keys()].map((key) => `item=${encodeURIComponent(key)}`).join("&");
    if (events) events.close();
    events = new EventSource(`/v1/events?${query}`);
    events.addEventListener("open", () => setLive("live", "live"));
    events.addEventListener("hello", (event) => {
      $("#node-name").textContent = JSON.parse(event.data).node;
    });
    events.addEventListener("counts", (event) => {
      for (const [key, count] of Object.entries(JSON.parse(event.data).counts)) {
        const post = posts.get(key);
        if (!post) continue;
        const changed = post.serverCount !== count;
        post.serverCount = count;
        render(post);
        if (changed && post.details.open && !post.pagedOn) loadLikers(post, false);
      }
    });
    const stream = events;
    events.addEventListener("error", () => {
      if (stream !== events) return;
      // The browser retries a dropped stream itself; one it gave up on (an error answer) we reopen.
      const closed = stream.readyState === EventSource.CLOSED;
      if (closed) setTimeout(follow, RECONNECT_MS);
      if (!navigator.onLine) setLive("down", "offline");
      else if (closed) setLive("down", "live counts stopped; retrying…");
      else setLive("connecting", "reconnecting…");
    });
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  // -- the page ----------------------------------------------------------------------------------

  function build(article) {
    const type = article.dataset.type;
    const id = article.dataset.id;
    const title = $("h2", article).textContent;
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.innerHTML =
      '<button type="button" class="like" aria-pressed="false">' +
      '<span class="heart" aria-hidden="true">♥</span> <span>Like</span></button>' +
      '<span class="tally"><span class="count">…</span> <span class="count-label">likes</span></span>' +
      '<span class="pending" aria-live="polite"></span>';
    const details = document.createElement("details");
    details.className = "who";
    details.innerHTML =
      "<summary>Who liked this</summary>" +
      '<ul class="likers"></ul><button type="button" class="more" hidden>Show more</button>';
    article.append(actions, details);
    const post = {
      type,
      id,
      key: `${type}:${id}`,
      title,
      serverCount: null,
      serverLiked: false,
      button: $(".like", actions),
      count: $(".count", actions),
      countLabel: $(".count-label", actions),
      pending: $(".pending", actions),
      details,
      likers: $(".likers", details),
      more: $(".more", details),
      likersNext: null,
      pagedOn: false,
    };
    post.button.setAttribute("aria-label", `Like: ${title}`);
    post.button.dataset.item = post.key;
    post.button.addEventListener("click", () => toggle(post));
    details.addEventListener("toggle", () => {
      if (details.open) {
        post.pagedOn = false;
        loadLikers(post, false);
      }
    });
    post.more.addEventListener("click", () => {
      post.pagedOn = true;
      loadLikers(post, true);
    });
    posts.set(post.key, post);
  }

  function setUpToken() {
    tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token-input").value.trim();
      if (!value) return;
      localStorage.setItem(TOKEN_KEY, value);
      $("#token-input").value = "";
      tokenForm.hidden = true;
      clearAlert();
      setStatus("", "Token saved in this browser; like again.");
    });
    $("#token-forget").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      setStatus("", "Token forgotten.");
    });
  }

  async function start() {
    $("#user-id").textContent = user;
    document.querySelectorAll(".post").forEach(build);
    setUpToken();
    window.addEventListener("online", () => {
      if (events && events.readyState === EventSource.OPEN) setLive("live", "live");
      flush();
    });
    window.addEventListener("offline", () => {
      setLive("down", "offline");
      renderAll();
    });
    setInterval(() => {
      if (navigator.onLine && Object.keys(loadQueue()).length) flush();
    }, RETRY_QUEUE_MS);
    follow();
    try {
      const health = await getJson("/healthz");
      $("#node-name").textContent = health.node;
    } catch {
      // offline at load: the queue and the live stream pick up once the network is back
    }
    await Promise.all([...posts.values()].map(refresh));
    renderAll();
    flush();
    document.body.dataset.ready = "true";
  }

  start();
})();
