// Serves the demo directory over HTTP on 127.0.0.1 (a secure context for
// WebCrypto), `node demo/serve.mjs [PORT]`; prints `listening http=ADDR`.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

const root = new URL(".", import.meta.url).pathname;
const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
  const file = join(root, path.endsWith("/") ? `${path}index.html` : path);
  try {
    const body = await readFile(file);
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404).end("not found");
  }
});
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`listening http=${address}:${port}`);
});
