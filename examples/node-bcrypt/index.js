// Answers with a bcrypt hash made by the native addon node-gyp compiled.
const http = require("http");
const bcrypt = require("bcrypt");

const port = process.env.PORT || 3000;
http
  .createServer((req, res) => {
    const hash = bcrypt.hashSync("kiln", 4);
    const ok = bcrypt.compareSync("kiln", hash);
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(`Hello from node-bcrypt, ${ok ? "verified" : "mismatch"} ${hash}\n`);
  })
  .listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
