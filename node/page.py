"""``GET /``: one page with a working like button, so a person can try a node from a browser.

The visitor gets a random user id kept in ``localStorage``; the button likes or unlikes the demo item
``demo/1`` through the public API, and the count refreshes every second to show likes arriving by
gossip from other nodes.
"""

LIKE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>likes</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 4rem auto; max-width: 30rem; text-align: center; }
  button { font-size: 2rem; padding: .5rem 1.5rem; border-radius: 2rem; cursor: pointer; }
  .liked { background: #e0245e; color: white; border-color: #e0245e; }
  #who { color: #777; font-size: .9rem; }
</style>
</head>
<body>
<h1>demo item</h1>
<button id="like" type="button">&#9829; <span id="count">0</span></button>
<p id="who"></p>
<script>
"use strict";
const item = "/v1/items/demo/1";
let user = localStorage.getItem("likes-user");
if (!user) {
  user = String(Math.floor(Math.random() * 2 ** 48));
  localStorage.setItem("likes-user", user);
}
document.getElementById("who").textContent = "you are user " + user;
const button = document.getElementById("like");
let liked = false;

function show(count) {
  document.getElementById("count").textContent = count;
  button.classList.toggle("liked", liked);
}

async function refresh() {
  const [info, mine] = await Promise.all([
    fetch(item).then(r => r.json()),
    fetch(item + "/likes/" + user).then(r => r.json()),
  ]);
  liked = mine.liked;
  show(info.count);
}

button.addEventListener("click", async () => {
  const reply = await fetch(item + "/likes/" + user, {method: liked ? "DELETE" : "PUT"});
  const body = await reply.json();
  liked = body.liked;
  show(body.count);
});

refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"""
