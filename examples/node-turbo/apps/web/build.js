// The app's build: copies the server into dist/, turbo's declared output.
const fs = require("fs");
fs.mkdirSync("dist", { recursive: true });
fs.copyFileSync("index.js", "dist/index.js");
