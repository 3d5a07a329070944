// Runs npm from the app's code at request time: only an image that is the
// whole build stage (`[start] runtime = "build"`) has it.
const http = require("http");
const { execFileSync } = require("child_process");

const port = process.env.PORT || 3000;
http
  .createServer((req, res) => {
    const npm = execFileSync("npm", ["--version"]).toString().trim();
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(`Hello from node-runtime-build, npm ${npm}\n`);
  })
  .listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
