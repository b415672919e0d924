package dev.colod.agent.config;

import com.fasterxml.jackson.annotation.JsonProperty;

import java.util.ArrayList;
import java.util.List;

/**
 * The whole of /etc/colod/colod.yaml, bound by Jackson. Defaults sit next to each field; every rule is
 * checked once, in {@link ConfigLoader}, which reports file, line, column and field. Documented field by
 * field in deploy/colod.example.yaml.
 */
public final class ColodConfig
{
    @JsonProperty("runtime-dir")
    public String runtimeDir = "/run/colod";
    @JsonProperty("ram-dir")
    public String ramDir = "/dev/shm/colod";
    @JsonProperty("log-level")
    public String logLevel = "info";
    @JsonProperty("on-stop")
    public String onStop = "leave-running";
    /** Prometheus endpoint, host:port; empty (the default) turns it off. */
    @JsonProperty("metrics-listen")
    public String metricsListen = "";
    public List<Vm> vms = new ArrayList<>();

    public static final class Vm
    {
        public String name;
        public String role;
        public String peer;
        public String netns;
        public String mode = "strict";
        /** Secondary: cold (start QEMU at failover) or hot (QEMU waits paused on the standby image). */
        public String standby = "cold";
        @JsonProperty("checkpoint-delay-ms")
        public long checkpointDelayMs = 100;
        @JsonProperty("heartbeat-interval-ms")
        public int heartbeatIntervalMs = 100;
        @JsonProperty("heartbeat-timeout-ms")
        public int heartbeatTimeoutMs = 1000;
        @JsonProperty("max-state-bytes")
        public long maxStateBytes = 0;
        @JsonProperty("memory-mib")
        public int memoryMib = 0;
        public int vcpus = 1;
        public String accel = "kvm";
        public String kernel;
        public String initrd;
        public String append;
        @JsonProperty("extra-args")
        public List<String> extraArgs = new ArrayList<>();
        public List<Nic> nics = new ArrayList<>();
    }

    public static final class Nic
    {
        public String tap;
        public String mac;
        public String bridge;
        public String buffer = "tap";
        @JsonProperty("max-frames")
        public int maxFrames = 16_384;
        @JsonProperty("max-bytes")
        public long maxBytes = 16L << 20;
        @JsonProperty("high-water-percent")
        public int highWaterPercent = 75;
        public String policy = "drop";
        /** NFQUEUE backend: queue number (unique per host), maximum queued frames, fail-open (never by default). */
        @JsonProperty("queue-num")
        public int queueNum = -1;
        @JsonProperty("queue-max-len")
        public int queueMaxLen = 16_384;
        @JsonProperty("fail-open")
        public boolean failOpen = false;
    }
}
