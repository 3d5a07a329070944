// Serves the page build.py wrote at build time.
const http = require("http");
const fs = require("fs");

const page = fs.readFileSync(__dirname + "/greeting.txt", "utf8");
const port = process.env.PORT || 3000;
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(page);
  })
  .listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
