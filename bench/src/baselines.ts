/** The floors the benchmarks compare against, measured in the same run. */
import { spawn } from "node:child_process";

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${file} exited with ${code}`))));
  });
}

/** A raw spawn of /bin/true from Node. */
export const rawSpawn = () => run("/bin/true", []);

/** A raw bubblewrap sandbox with the same namespaces as an agentbox sandbox, running /bin/true. */
export const rawBwrap = () =>
  run("bwrap", [
    "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
    "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
    "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    "/bin/true",
  ]);

/** A plain CPython start that evaluates 1+1 (the cost a code context's warm pool avoids). */
export const rawPython = () => run("/usr/bin/python3", ["-c", "1+1"]);
