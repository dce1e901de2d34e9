// The console's offline cache (HTTPS only: service workers need a secure context). Network
// first, so a phone always gets the gateway's current page when it can; the cache is only for
// a reload while the network is gone. Alerts never come from here: they come from the broker.
const CACHE = "bandgate-console-v1";
const FILES = ["./", "index.html", "style.css", "app.js", "mqtt.js", "words.js", "icon.svg", "console.json"];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (e) => {
  if (e.request.method !== "GET") return;
  e.respondWith(
    fetch(e.request)
      .then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put(e.request, copy));
        }
        return res;
      })
      .catch(() => caches.match(e.request, { ignoreSearch: true })),
  );
});
