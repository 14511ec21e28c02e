// No cluster runs these manifests here: this keeps them true to the code they start, to deploy/nats/trellis.conf,
// and to the image that deploy/container/Dockerfile builds.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { NETNS_RUN_DIR } from "../../libs/netlink/netns.js";
import { NETNS_ETC_DIR } from "../../services/link-agent/dns/netns-etc.js";
import { parseBgpOptions } from "../../services/link-agent/bgp/options.js";
import { DEFAULT_METRICS_ADDRESS } from "../../libs/metrics/endpoint.js";
import { parseInvocation, type PluginRole } from "../../services/cni/invocation.js";
import { DEFAULT_AGENT_SOCKET } from "../../services/link-agent/local-api/protocol.js";
import { DEFAULT_CNI_DATA_DIR } from "../../services/link-agent/local-api/attachments.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const K8S = "deploy/kubernetes";
/** The Multus example: applied on its own, as it needs Multus's CRD. */
const MULTUS_EXAMPLE = "multus-network.yaml";
/** The name the manifests give the Trellis image; kustomization.yaml says where it was pushed. */
const TRELLIS_IMAGE = "trellis";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  ports?: { name: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[];
  securityContext?: { privileged?: boolean };
  readinessProbe?: { grpc?: { port: number } };
  livenessProbe?: { grpc?: { port: number } };
}
interface PodSpec {
  hostNetwork?: boolean;
  dnsPolicy?: string;
  initContainers?: Container[];
  containers: Container[];
  volumes?: { name: string; hostPath?: { path: string }; secret?: { secretName: string }; configMap?: { name: string } }[];
}
interface Manifest {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    replicas?: number;
    selector?: Record<string, string>;
    ports?: { port: number; targetPort: string }[];
    template?: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}

const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
const yamlOf = (path: string) => parseAllDocuments(read(path)).map((doc) => doc.toJS());

const kustomization = yamlOf(`${K8S}/kustomization.yaml`)[0] as { resources: string[]; images: { name: string }[] };
const manifests: Manifest[] = kustomization.resources.filter((r) => r.endsWith(".yaml")).flatMap((r) => yamlOf(`${K8S}/${r}`));

function find(kind: string, name: string): Manifest {
  const manifest = manifests.find((m) => m.kind === kind && m.metadata.name === name);
  if (!manifest) throw new Error(`no ${kind} ${name} in ${K8S}`);
  return manifest;
}

const podSpec = (kind: string, name: string): PodSpec => find(kind, name).spec!.template!.spec;
const workloads = manifests.filter((m) => m.spec?.template);
const trellisContainers = workloads.flatMap((w) =>
  [...(w.spec!.template!.spec.initContainers ?? []), ...w.spec!.template!.spec.containers]
    .filter((c) => c.image === TRELLIS_IMAGE)
    .map((container) => ({ workload: w.metadata.name, container })),
);
const agent = podSpec("DaemonSet", "trellis-agent");
const agentContainer = agent.containers[0]!;

/** user -> the variable its password comes from, as deploy/nats/trellis.conf has them. */
const natsUsers = new Map([...read("deploy/nats/trellis.conf").matchAll(/user: ([\w.-]+), password: \$(\w+)/g)].map((m) => [m[1]!, m[2]!]));

/**
 * The argument vector a Trellis container runs: its args under the image's entrypoint, or the `exec trellis`
 * line of a `sh -c` script.
 */
function trellisArgv(container: Container): string[] {
  if (!container.command) return container.args ?? [];
  expect(container.command.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
  const line = /^exec trellis (.*)$/m.exec(container.command[2]!);
  expect(line, "the script ends in `exec trellis …`").not.toBeNull();
  return line![1]!.split(/\s+/).map((word) => word.replaceAll('"', ""));
}

function environmentOf(container: Container): string[] {
  const fromRefs = (container.envFrom ?? []).flatMap((from) => {
    if (from.configMapRef) return Object.keys(find("ConfigMap", from.configMapRef.name).data ?? {});
    return Object.keys(find("Secret", from.secretRef!.name).stringData ?? {});
  });
  return [...fromRefs, ...(container.env ?? []).map((e) => e.name)];
}

const envValue = (container: Container, name: string) => container.env?.find((e) => e.name === name);

/** Every environment variable the services and the CLI read (the lab's own are not for deployment). */
function variablesTrellisReads(): Set<string> {
  const names = new Set<string>();
  for (const dir of ["libs", "services"]) {
    for (const file of readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })) {
      if (!file.endsWith(".ts") || file.startsWith("lab/") || file.includes("/gen/")) continue;
      for (const match of read(join(dir, file)).matchAll(/process\.env\.([A-Z_][A-Z0-9_]*)/g)) names.add(match[1]!);
    }
  }
  return names;
}

/** `HOST:PORT` or `scheme://HOST:PORT`. */
function hostAndPort(address: string): [string, number] {
  const match = /^(?:\w+:\/\/)?([^:/]+):(\d+)$/.exec(address);
  if (!match) throw new Error(`not HOST:PORT: ${address}`);
  return [match[1]!, Number(match[2])];
}

/** The container port a Service's port leads to, through the pods its selector picks. */
function servicePortTarget(service: Manifest): number {
  const selector = service.spec!.selector!;
  const selected = workloads.filter((w) => Object.entries(selector).every(([k, v]) => w.spec!.template!.metadata.labels[k] === v));
  expect(selected.map((w) => w.metadata.name), `Service ${service.metadata.name} selects one workload`).toHaveLength(1);
  const { targetPort } = service.spec!.ports![0]!;
  const port = selected[0]!.spec!.template!.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === targetPort);
  if (!port) throw new Error(`Service ${service.metadata.name}: no container port named ${targetPort}`);
  return port.containerPort;
}

describe("Kubernetes manifests (deploy/kubernetes)", () => {
  it("are all in the kustomization, with the Trellis image named where the workloads use it", () => {
    const files = readdirSync(join(ROOT, K8S)).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml" && f !== MULTUS_EXAMPLE);
    expect(kustomization.resources.filter((r) => r.endsWith(".yaml")).sort()).toEqual(files.sort());
    expect(kustomization.images.map((i) => i.name)).toEqual([TRELLIS_IMAGE]);
    expect(trellisContainers.map((c) => c.workload).sort()).toEqual(["trellis-agent", "trellis-agent", "trellis-ipam", "trellis-planner"]);
  });

  it("run trellis commands that exist, with flags they take", () => {
    const bundle = join(ROOT, "dist/bundle/trellis.js");
    expect(existsSync(bundle), "dist/bundle/trellis.js: run `npm run build` first").toBe(true);
    for (const { workload, container } of trellisContainers) {
      // The command parses every flag before it starts anything; the probe flag stops it there.
      const run = spawnSync(process.execPath, [bundle, ...trellisArgv(container), "--manifest-probe"], { encoding: "utf8" });
      expect(run.stderr, workload).toContain("Unknown option '--manifest-probe'");
      expect(run.status, workload).toBe(2);
    }
    // One Node start-up per workload: on a loaded machine that is seconds.
  }, 60_000);

  it("set only environment variables that Trellis reads, or that the container's own command uses", () => {
    const reads = variablesTrellisReads();
    for (const { workload, container } of trellisContainers) {
      const script = [...(container.command ?? []), ...(container.args ?? [])].join(" ");
      for (const name of environmentOf(container)) {
        const used = reads.has(name) || new RegExp(`\\$[({]?${name}\\b`).test(script);
        expect(used, `${workload} sets ${name}`).toBe(true);
      }
    }
  });

  it("give every user of deploy/nats/trellis.conf a placeholder password, and log each service in as its user", () => {
    const services = find("Secret", "trellis-nats-services").stringData!;
    const agents = find("Secret", "trellis-nats-agents").stringData!;
    expect(Object.keys({ ...services, ...agents }).sort()).toEqual([...natsUsers.values()].sort());
    for (const [user, variable] of natsUsers) {
      // The agent's script finds its password by this rule.
      expect(variable).toBe(`TRELLIS_${user.toUpperCase().replace(/[-.]/g, "_")}_PASSWORD`);
      expect(variable in agents, `${variable} is in the agents' Secret only if ${user} is an agent`).toBe(user.startsWith("agent-"));
    }
    for (const value of [...Object.values(services), ...Object.values(agents)]) expect(value).toMatch(/^REPLACEME[A-Za-z0-9]*$/);

    for (const name of ["trellis-ipam", "trellis-planner"]) {
      const container = podSpec("Deployment", name).containers[0]!;
      const user = envValue(container, "TRELLIS_NATS_USER")!.value!;
      expect(envValue(container, "TRELLIS_NATS_PASSWORD")?.valueFrom?.secretKeyRef).toEqual({ name: "trellis-nats-services", key: natsUsers.get(user) });
    }
    expect(envValue(agentContainer, "TRELLIS_NATS_USER")?.value).toBe("agent-$(TRELLIS_HOST)");
    const secretVolume = agent.volumes!.find((v) => v.secret?.secretName === "trellis-nats-agents")!;
    const secretMount = agentContainer.volumeMounts!.find((m) => m.name === secretVolume.name)!;
    expect(agentContainer.command!.join(" ")).toContain(`${secretMount.mountPath}/$key`);

    const nats = podSpec("StatefulSet", "nats").containers[0]!;
    expect(nats.envFrom!.map((from) => from.secretRef?.name).sort()).toEqual(["trellis-nats-agents", "trellis-nats-services"]);
  });

  it("run NATS with deploy/nats/trellis.conf and keep its JetStream store on the volume", () => {
    const generator = (yamlOf("deploy/nats/kustomization.yaml")[0] as { configMapGenerator: { name: string; files: string[] }[] }).configMapGenerator;
    expect(generator).toEqual([{ name: "trellis-nats-config", files: ["trellis.conf"] }]);
    expect(kustomization.resources).toContain("../nats");
    const pod = podSpec("StatefulSet", "nats");
    const mountOf = (volume: string) => pod.containers[0]!.volumeMounts!.find((m) => m.name === volume)!.mountPath;
    const configVolume = pod.volumes!.find((v) => v.configMap?.name === "trellis-nats-config")!;
    expect(pod.containers[0]!.command).toEqual(["nats-server", "--config", `${mountOf(configVolume.name)}/trellis.conf`]);
    const storeDir = /store_dir: (\S+) /.exec(read("deploy/nats/trellis.conf"))![1]!;
    expect(storeDir.startsWith(`${mountOf("data")}/`)).toBe(true);
  });

  it("run two replicas of IPAM and of the planner, so that losing one stops nothing", () => {
    for (const name of ["trellis-ipam", "trellis-planner"]) {
      expect(workloads.find((w) => w.metadata.name === name)?.spec?.replicas, name).toBe(2);
    }
  });

  it("point the connection settings at Services whose ports lead to where each service listens", () => {
    const connection = find("ConfigMap", "trellis-connection").data!;
    const served = { TRELLIS_NATS_URL: "nats", TRELLIS_IPAM_ADDR: "trellis-ipam", TRELLIS_PLANNER_ADDR: "trellis-planner" };
    expect(Object.keys(connection).sort()).toEqual(Object.keys(served).sort());
    for (const [variable, serviceName] of Object.entries(served)) {
      const [host, port] = hostAndPort(connection[variable]!);
      const service = find("Service", serviceName);
      expect(host).toBe(serviceName);
      expect(service.spec!.ports![0]!.port).toBe(port);
      expect(servicePortTarget(service), `${serviceName}'s container port`).toBe(port);
    }
    for (const name of ["trellis-ipam", "trellis-planner"]) {
      const container = podSpec("Deployment", name).containers[0]!;
      const listen = trellisArgv(container).find((arg) => arg.startsWith("--listen="))!;
      const port = hostAndPort(listen.slice("--listen=".length))[1];
      expect(port, `${name} --listen`).toBe(servicePortTarget(find("Service", name)));
      // gRPC probes ask the health service every Trellis gRPC server has (libs/grpc/health.ts), on its plaintext
      // listener: the service port speaks TLS, and kubelet's gRPC probes do not.
      const health = trellisArgv(container).find((arg) => arg.startsWith("--health-listen="))!;
      const healthPort = hostAndPort(health.slice("--health-listen=".length))[1];
      expect([container.readinessProbe?.grpc?.port, container.livenessProbe?.grpc?.port], `${name} probes`).toEqual([healthPort, healthPort]);
    }
    const natsListen = /^listen: (\S+)$/m.exec(read("deploy/nats/trellis.conf"))![1]!;
    expect(hostAndPort(natsListen)[1]).toBe(servicePortTarget(find("Service", "nats")));
  });

  it("run the agent in each node's network namespace, making containers' namespaces and resolv.conf files on the node", () => {
    expect(agent.hostNetwork).toBe(true);
    expect(agent.dnsPolicy).toBe("ClusterFirstWithHostNet");
    const hostMount = (path: string) => {
      const mount = agentContainer.volumeMounts!.find((m) => m.mountPath === path);
      expect(agent.volumes!.find((v) => v.name === mount?.name)?.hostPath?.path, `${path} is the node's`).toBe(path);
      return mount!;
    };
    expect(hostMount(NETNS_RUN_DIR).mountPropagation).toBe("Bidirectional");
    expect(hostMount(NETNS_ETC_DIR)).toBeDefined();
    // Kubernetes refuses Bidirectional propagation in any container that is not privileged.
    expect(agentContainer.securityContext?.privileged).toBe(true);
    expect(envValue(agentContainer, "TRELLIS_HOST")?.valueFrom?.fieldRef?.fieldPath).toBe("spec.nodeName");
    expect(envValue(agentContainer, "TRELLIS_UNDERLAY_ADDRESS")?.valueFrom?.fieldRef?.fieldPath).toBe("status.hostIP");
    expect(trellisArgv(agentContainer)).toEqual(["agent", "--address=$TRELLIS_UNDERLAY_ADDRESS", "--bgp-as=$TRELLIS_BGP_AS", "--bgp-peer=$TRELLIS_BGP_PEER"]);
  });

  it("have Prometheus scrape each service's metrics port, where the service serves its metrics by default", () => {
    for (const [name, service] of [["trellis-planner", "planner"], ["trellis-ipam", "ipam"], ["trellis-agent", "agent"]] as const) {
      const workload = workloads.find((w) => w.metadata.name === name)!;
      const template = workload.spec!.template! as { metadata: { annotations?: Record<string, string> }; spec: PodSpec };
      const port = Number(DEFAULT_METRICS_ADDRESS[service].split(":")[1]);
      expect(template.metadata.annotations, name).toEqual({ "prometheus.io/scrape": "true", "prometheus.io/port": String(port), "prometheus.io/path": "/metrics" });
      expect(template.spec.containers[0]!.ports, name).toContainEqual({ name: "metrics", containerPort: port });
      expect(template.spec.containers[0]!.args?.some((arg) => arg.startsWith("--metrics")) ?? false, `${name} keeps the default metrics address`).toBe(false);
    }
  });

  it("give the agent BGP settings that its parser takes, from the ConfigMap it reads them from", () => {
    expect(agentContainer.envFrom!.map((from) => from.configMapRef?.name)).toContain("trellis-bgp");
    const bgp = find("ConfigMap", "trellis-bgp").data!;
    expect(Object.keys(bgp).sort()).toEqual(["TRELLIS_BGP_AS", "TRELLIS_BGP_PEER"]);
    const options = parseBgpOptions(bgp.TRELLIS_BGP_AS, [bgp.TRELLIS_BGP_PEER!], ["192.168.1.11"]);
    expect(options?.peers).toHaveLength(1);
  });
});

describe("the CNI plugins on Kubernetes (agent.yaml's install step, cni.yaml, multus-network.yaml)", () => {
  const install = agent.initContainers!.find((c) => c.name === "install-cni")!;
  const settings = find("ConfigMap", "trellis-cni").data!;
  const attachments = yamlOf(`${K8S}/${MULTUS_EXAMPLE}`) as { kind: string; metadata: { name: string }; spec: { config: string } }[];
  /** A config as the plugin reads it on an ADD, with its own parser. */
  const parsed = (role: PluginRole, config: string) =>
    parseInvocation(role, { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c0ffee", CNI_NETNS: "/var/run/netns/cni-1", CNI_IFNAME: "net1" }, config);
  /** Where a pod's path is on the node, through its hostPath volume. */
  const nodePathOf = (container: Container, path: string) => {
    const mount = container.volumeMounts!.find((m) => m.mountPath === path);
    return agent.volumes!.find((v) => v.name === mount?.name)?.hostPath?.path;
  };

  it("install the plugins and a Node into the node's /opt/cni/bin, at the same path, as the plugins' first line names it", () => {
    expect(nodePathOf(install, "/opt/cni/bin")).toBe("/opt/cni/bin");
    expect(trellisArgv(install)).toEqual(["cni", "install", "--with-node", "--bin-dir=/opt/cni/bin", "--conf-dir=/etc/cni/multus/net.d", "--name=$TRELLIS_CNI_CONF", "$TRELLIS_CNI_NETWORK"]);
    // Multus's folder of named configs: no node's default network.
    expect(nodePathOf(install, "/etc/cni/multus/net.d")).toBe("/etc/cni/multus/net.d");
    expect(install.envFrom).toEqual([{ configMapRef: { name: "trellis-cni" } }]);
  });

  it("write a conflist, with the install step's command, that the plugin's parser takes: the network of cni.yaml, the agent's socket", () => {
    const work = mkdtempSync(join(tmpdir(), "trellis-k8s-cni-"));
    try {
      const argv = trellisArgv(install).map((arg) =>
        arg.replace("$TRELLIS_CNI_CONF", settings.TRELLIS_CNI_CONF!).replace("$TRELLIS_CNI_NETWORK", settings.TRELLIS_CNI_NETWORK!).replace("/opt/cni/bin", join(work, "bin")).replace("/etc/cni/multus/net.d", join(work, "conf")),
      );
      const run = spawnSync(process.execPath, [join(ROOT, "dist/bundle/trellis.js"), ...argv], { encoding: "utf8", env: { ...process.env, TRELLIS_AGENT_SOCKET: "" } });
      expect(run.status, run.stderr).toBe(0);
      expect(readdirSync(join(work, "bin")).sort()).toEqual(["trellis", "trellis-ipam", "trellis-node"]);
      const conflist = JSON.parse(readFileSync(join(work, "conf", `${settings.TRELLIS_CNI_CONF}.conflist`), "utf8")) as { plugins: Record<string, unknown>[] };
      const invocation = parsed("main", JSON.stringify({ cniVersion: "1.0.0", name: settings.TRELLIS_CNI_CONF, ...conflist.plugins[0] }));
      expect([invocation.network, invocation.socket]).toEqual([settings.TRELLIS_CNI_NETWORK, DEFAULT_AGENT_SOCKET]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 60_000);

  it("let the plugins reach the agent's socket on the node, and keep its attachment records there", () => {
    expect(nodePathOf(agentContainer, dirname(DEFAULT_AGENT_SOCKET))).toBe(dirname(DEFAULT_AGENT_SOCKET));
    expect(nodePathOf(agentContainer, DEFAULT_CNI_DATA_DIR)).toBe(DEFAULT_CNI_DATA_DIR);
    expect(trellisArgv(agentContainer).some((arg) => arg.startsWith("--socket")), "the agent keeps the default socket").toBe(false);
  });

  it("give Multus attachments whose configs the plugins' parser takes, on the network of cni.yaml, asking the node's agent", () => {
    expect(attachments.map((a) => [a.kind, a.metadata.name])).toEqual([
      ["NetworkAttachmentDefinition", settings.TRELLIS_CNI_CONF],
      ["NetworkAttachmentDefinition", `${settings.TRELLIS_CNI_CONF}-ipam`],
    ]);
    const [own, reference] = attachments.map((a) => a.spec.config);
    const main = parsed("main", own!);
    expect([main.role, main.network, main.socket, main.config.type, main.config.name]).toEqual(["main", settings.TRELLIS_CNI_NETWORK, DEFAULT_AGENT_SOCKET, "trellis", settings.TRELLIS_CNI_CONF]);
    const ipam = parsed("ipam", reference!);
    expect([ipam.network, ipam.socket, ipam.config.type]).toEqual([settings.TRELLIS_CNI_NETWORK, DEFAULT_AGENT_SOCKET, "ipvlan"]);
    expect((ipam.config.ipam as { type: string }).type).toBe("trellis-ipam");
  });
});

describe("container image (deploy/container/Dockerfile)", () => {
  const dockerfile = read("deploy/container/Dockerfile");
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));

  it("ships the bundle with the package.json that makes it ES modules, as the entrypoint the manifests rely on", () => {
    expect(JSON.parse(read("package.json")).type).toBe("module");
    expect(finalStage).toMatch(/^COPY package\.json \.\/$/m);
    expect(finalStage).toMatch(/^COPY --from=build \/src\/dist\/bundle \.\/dist\/bundle$/m);
    expect(finalStage).toMatch(/^ENTRYPOINT \["trellis"\]$/m);
    // Beside the bundle, where `trellis cni install` finds it.
    expect(finalStage).toMatch(/^COPY --from=build \/src\/dist\/cni \.\/dist\/cni$/m);
  });

  it("has the native addons the bundle leaves out, and what the agent runs and loads", () => {
    const externals = /external: \[([^\]]*)\]/.exec(read("scripts/bundle-cli.mjs"))![1]!.match(/[\w@/.-]+/g)!;
    const dependencies = Object.keys(JSON.parse(read("package.json")).dependencies);
    expect(dependencies).toEqual(expect.arrayContaining(externals));
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev$/m);
    expect(finalStage).toMatch(/^COPY --from=modules \/opt\/trellis\/node_modules \.\/node_modules$/m);
    expect(finalStage).toMatch(/apt-get install .*\biproute2\b/);
    expect(finalStage, "BIRD, which the agent runs with --bgp-peer").toMatch(/apt-get install .*\bbird2\b/);
    // koffi loads glibc's libc.so.6 (libs/netlink/netns.ts): no musl base image.
    expect(read("libs/netlink/netns.ts")).toContain('koffi.load("libc.so.6")');
    expect(/^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)![1]).toMatch(/^node:20-bookworm/);
  });
});
