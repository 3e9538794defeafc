import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "./args.js";

const GREETING = `Hello,
multi-line template
world`;

function readConfig(file) {
  const text = fs.readFileSync(file, "utf8");
  const config = JSON.parse(text);
  if (!config.name) {
    throw new Error("config needs a name");
  }
  return config;
}

export class Server {
  constructor(port) {
    this.port = port;
    this.routes = new Map();
  }

  route(pattern, handler) {
    this.routes.set(pattern, handler);
    return this;
  }

  handle(request) {
    const handler = this.routes.get(request.path);
    if (!handler) {
      return { status: 404, body: "not found" };
    }
    return handler(request);
  }
}

export function main(argv) {
  const args = parseArgs(argv);
  const config = readConfig(path.resolve(args.config));
  const server = new Server(config.port ?? 8080);
  server.route("/", () => ({ status: 200, body: GREETING }));
  return server;
}

const double = (x) => {
  const y = x * 2;
  return y;
};

export default main;
