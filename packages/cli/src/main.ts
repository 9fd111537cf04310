#!/usr/bin/env node
/** The `agentbox` command. */
import { Command } from "commander";
import { DEFAULT_URL } from "@agentbox/sdk";
import { execCommand } from "./commands/exec.js";
import { killCommand, logsCommand, psCommand } from "./commands/process.js";
import { runCommand } from "./commands/run.js";
import { sandboxCommand } from "./commands/sandbox.js";
import { serveCommand } from "./commands/serve.js";
import { sessionCommand } from "./commands/session.js";
import { cpCommand, lsCommand, watchCommand } from "./commands/files.js";
import { shellCommand, terminalCommand } from "./commands/terminal.js";
import { templateCommand } from "./commands/template.js";
import { volumeCommand } from "./commands/volume.js";
import { poolCommand } from "./commands/pool.js";
import { runCodeCommand, workerCommand } from "./commands/code.js";
import { networkCommand, portCommand } from "./commands/network.js";

function buildProgram(): Command {
  const program = new Command("agentbox")
    .description("Self-hostable sandboxes for AI agents: run the server, manage sandboxes, run commands in them")
    .version("0.1.0")
    .option("--url <url>", `server URL (env AGENTBOX_URL, default ${DEFAULT_URL})`)
    .option("--api-key <key>", "API key (env AGENTBOX_API_KEY; for a server on this machine, read from <data dir>/api-key)")
    .option("--json", "print machine-readable JSON (errors too, as {\"error\":{code,message}} on stdout)")
    .showSuggestionAfterError()
    .addHelpText(
      "after",
      `
Global options may also be given after the command (agentbox sandbox list --json).
Errors are printed to stderr as "error: CODE: message" and exit with code 1.

Examples:
  $ agentbox serve                                   # start a server on 127.0.0.1:7878
  $ SB=$(agentbox sandbox create)                    # in another terminal
  $ agentbox exec $SB -- uname -a
  $ agentbox exec $SB -- 'echo hello > greeting && cat greeting'
  $ agentbox run $SB --id web -d -- python3 -m http.server 8000   # a background process
  $ agentbox ps $SB
  $ agentbox logs -f $SB web                         # Ctrl-C stops following, not the process
  $ agentbox kill $SB web --signal TERM
  $ agentbox cp ./project $SB:/workspace/project     # files and directories, both ways
  $ agentbox ls $SB /workspace -l
  $ agentbox watch $SB src                           # changes as they happen, until Ctrl-C
  $ agentbox shell $SB                               # an interactive terminal; Ctrl-] detaches
  $ S=$(agentbox session create $SB)                 # a persistent shell
  $ agentbox session exec $SB $S -- 'cd /tmp && export X=1'
  $ agentbox session exec $SB $S -- 'echo $PWD $X'  # /tmp 1
  $ agentbox sandbox rm $SB
  $ agentbox template import app ./app-oci.tar            # an OCI image as a template
  $ agentbox pool create warm --template app --replicas 3 && agentbox sandbox create --pool warm
  $ agentbox run-code $SB --language python analysis.py    # a stateful Python context
  $ SB=$(agentbox sandbox create --allow pypi.org --allow files.pythonhosted.org)   # egress allowlist
  $ agentbox network log $SB                               # what it connected to, or tried to
  $ agentbox port expose $SB 8000                          # a url reaching port 8000 in the sandbox
  $ agentbox --url https://agentbox.example.com --api-key "$KEY" sandbox list`,
    );
  program.addCommand(serveCommand());
  program.addCommand(sandboxCommand());
  program.addCommand(execCommand());
  program.addCommand(runCommand());
  program.addCommand(psCommand());
  program.addCommand(logsCommand());
  program.addCommand(killCommand());
  program.addCommand(shellCommand());
  program.addCommand(terminalCommand());
  program.addCommand(sessionCommand());
  program.addCommand(cpCommand());
  program.addCommand(lsCommand());
  program.addCommand(watchCommand());
  program.addCommand(templateCommand());
  program.addCommand(volumeCommand());
  program.addCommand(poolCommand());
  program.addCommand(networkCommand());
  program.addCommand(portCommand());
  program.addCommand(runCodeCommand());
  program.addCommand(workerCommand());
  return program;
}

// A reader that goes away (`agentbox ls … | head`) ends our output; that is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

await buildProgram().parseAsync(process.argv);
