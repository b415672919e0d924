package dev.colod.agent.config;

import com.fasterxml.jackson.annotation.JsonProperty;
import dev.colod.buffer.BackendProvider;
import dev.colod.buffer.BufferLimits;
import dev.colod.core.ColoConfig;

import java.util.ArrayList;
import java.util.List;

/**
 * The whole of /etc/colod/colod.yaml, bound by Jackson; choices bind to enums here, not later. Defaults of the
 * agent's own fields sit next to each field; the engine's fields (mode, checkpoint-delay-ms, heartbeat-*,
 * max-state-bytes) and each NIC's limits (max-frames, max-bytes, high-water-percent, policy) stay null unless
 * the file names them, and {@link ConfigLoader} hands them to {@link ColoConfig} and {@link BufferLimits},
 * whose defaults and {@code conclude()} checks are the only ones. Documented in deploy/colod.example.yaml.
 */
public final class ColodConfig
{
    public enum LogLevel
    {
        TRACE, DEBUG, INFO, WARN, ERROR
    }

    public enum OnStop
    {
        /** The VM keeps running, unprotected. */
        @JsonProperty("leave-running") LEAVE_RUNNING,
        /** QEMU is told to quit. */
        @JsonProperty("stop") STOP
    }

    public enum Role
    {
        PRIMARY, SECONDARY
    }

    public enum Reprotect
    {
        /** After a failover the survivor protects the VM again as soon as the other host's colod is back. */
        AUTO,
        /** ... only on {@code coloctl reprotect VM}. */
        MANUAL
    }

    public enum Standby
    {
        /** QEMU starts at failover. */
        COLD,
        /** QEMU waits paused on the committed image. */
        HOT
    }

    public enum Accel
    {
        KVM, TCG
    }

    public enum WriteTracking
    {
        /** The kernel marks written pages (userfaultfd async write-protect + PAGEMAP_SCAN); refused if unavailable. */
        KERNEL,
        /** Compare RAM with a shadow copy: no kernel support needed, a second copy of RAM, cost grows with RAM. */
        COMPARE,
        /** KERNEL where this host supports it, else COMPARE (with a warning). */
        AUTO
    }

    /** The page size of the primary's guest RAM (OPERATIONS.md, "What the host needs"; BENCHMARKS.md, "2 MiB pages"). */
    public enum RamPageSize
    {
        /** 4 KiB pages on ram-dir (tmpfs): write tracking and copies per 4 KiB page. */
        @JsonProperty("4k")
        PAGE_4K,
        /**
         * 2 MiB pages on hugepage-dir (hugetlbfs): the written-page scan walks 512x fewer entries, but each written huge
         * page is copied whole (2 MiB).
         */
        @JsonProperty("2m")
        PAGE_2M
    }

    public enum Buffer
    {
        /** Agent taps and tc: frames held in colod. */
        TAP,
        /** iptables NFQUEUE: frames held in the kernel. */
        NFQUEUE,
        /** XDP + AF_XDP: frames held in a UMEM shared with the kernel, no system call per held frame. */
        XDP
    }

    @JsonProperty("runtime-dir")
    public String runtimeDir = "/run/colod";
    @JsonProperty("ram-dir")
    public String ramDir = "/dev/shm/colod";
    /** Where the RAM files of VMs with {@code ram-page-size: 2m} live: a hugetlbfs mount with 2 MiB pages. */
    @JsonProperty("hugepage-dir")
    public String hugepageDir = "/dev/hugepages";
    /** What must survive a reboot: each VM's current role (which host is primary now). */
    @JsonProperty("state-dir")
    public String stateDir = "/var/lib/colod";
    @JsonProperty("log-level")
    public LogLevel logLevel = LogLevel.INFO;
    @JsonProperty("on-stop")
    public OnStop onStop = OnStop.LEAVE_RUNNING;
    /** Prometheus endpoint, host:port; empty (the default) turns it off. */
    @JsonProperty("metrics-listen")
    public String metricsListen = "";
    public List<Vm> vms = new ArrayList<>();
    /** This host's name as the arbiter and the peer know it; empty: the system's host name. */
    @JsonProperty("host-name")
    public String hostName = "";
    /** Who decides which host may serve a VM: etcd, or {@code none} (labs only). Required. */
    public Arbiter arbiter;
    /** Mutual TLS of the replication channels; required unless {@code insecure: true}. */
    public Tls tls;
    /** Plaintext replication (VM memory in clear, any host may connect): labs only, warned about at every start. */
    public boolean insecure = false;

    /** PEM files: the CA that signs both hosts' certificates, this host's certificate and its key. */
    public static final class Tls
    {
        public String ca;
        public String cert;
        public String key;
        /**
         * After each channel's TLS 1.3 handshake, carry its data in sealed chunks (AES-128-GCM under keys from a
         * secret exchanged inside the TLS session; PROTOCOL.md section 11) when the peer offers them too; false:
         * TLS records always. Either way the handshake and its mutual authentication are the same.
         */
        @JsonProperty("sealed-chunks")
        public boolean sealedChunks = true;
    }

    /**
     * {@code arbiter: none}, or a mapping with the etcd endpoints. Without an arbiter a partition of the replication
     * link runs two copies of the VM: the secondary fails over while the primary serves on.
     */
    public static final class Arbiter
    {
        /** etcd client URLs (http://host:port), tried in order. Empty with {@code none}. */
        public List<String> etcd = new ArrayList<>();
        @JsonProperty("lease-ttl-ms")
        public long leaseTtlMs = 3000;
        @JsonProperty("safety-margin-ms")
        public long safetyMarginMs = 500;
        @JsonProperty("request-timeout-ms")
        public int requestTimeoutMs = 500;
        public String prefix = "/colod";
        /** For https endpoints: the etcd cluster's CA, and this host's client certificate and key (PEM). */
        public String ca;
        public String cert;
        public String key;
        private boolean none;

        public Arbiter()
        {
        }

        @com.fasterxml.jackson.annotation.JsonCreator(mode = com.fasterxml.jackson.annotation.JsonCreator.Mode.DELEGATING)
        public static Arbiter of(final String word)
        {
            if (!"none".equals(word))
            {
                throw new IllegalArgumentException("arbiter must be 'none' or a mapping with etcd endpoints, was '" + word + "'");
            }
            final Arbiter a = new Arbiter();
            a.none = true;
            return a;
        }

        public boolean none()
        {
            return none;
        }
    }

    public static final class Vm
    {
        public String name;
        public Role role;
        /** The other host's replication address (with {@code listen}); without {@code listen}: see the example file. */
        public String peer;
        /** This host's replication address, host:port. Set on both hosts, roles follow the VM across failovers. */
        public String listen;
        /** The name the peer's TLS certificate must carry; empty: the host part of {@code peer}. */
        @JsonProperty("peer-name")
        public String peerName = "";
        public Reprotect reprotect = Reprotect.AUTO;
        public String netns;
        public Standby standby = Standby.COLD;
        @JsonProperty("memory-mib")
        public int memoryMib = 0;
        public int vcpus = 1;
        public Accel accel = Accel.KVM;
        /** Primary: how the pages the guest wrote since the last checkpoint are found. */
        @JsonProperty("write-tracking")
        public WriteTracking writeTracking = WriteTracking.KERNEL;
        /** Primary: pages re-read at each checkpoint, in turn, to audit write tracking (0: no audit). */
        @JsonProperty("write-audit-pages")
        public int writeAuditPages = 1024;
        /** Primary: the page size of the guest's RAM where colod starts it. */
        @JsonProperty("ram-page-size")
        public RamPageSize ramPageSize = RamPageSize.PAGE_4K;
        public String kernel;
        public String initrd;
        public String append;
        @JsonProperty("extra-args")
        public List<String> extraArgs = new ArrayList<>();
        public List<Nic> nics = new ArrayList<>();
        /** The guest's disk, replicated with each checkpoint; null: a diskless VM. Shorthand for one entry of disks. */
        public Disk disk;
        /** The guest's disks in order (the first is the one a VM without kernel boots), each replicated with each checkpoint. */
        public List<Disk> disks = new ArrayList<>();
        /** bios (SeaBIOS) or uefi (OVMF: uefi-code read-only, uefi-vars replicated like a disk). */
        public Firmware firmware = Firmware.BIOS;
        /** UEFI: the firmware's code (the same file on both hosts). */
        @JsonProperty("uefi-code")
        public String uefiCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
        /** UEFI: this VM's variable store, a copy of the firmware's template; the guest writes it. */
        @JsonProperty("uefi-vars")
        public String uefiVars;

        // the engine's settings: null = ColoConfig's default
        public ColoConfig.Mode mode;
        @JsonProperty("checkpoint-delay-ms")
        public Long checkpointDelayMs;
        @JsonProperty("heartbeat-interval-ms")
        public Integer heartbeatIntervalMs;
        @JsonProperty("heartbeat-timeout-ms")
        public Integer heartbeatTimeoutMs;
        /** Secondary: wait for a primary whose agent is gone but whose host answers (0: fail over at once). */
        @JsonProperty("peer-restart-grace-ms")
        public Long peerRestartGraceMs;
        /** Null or 0: the RAM size + 64 MiB. */
        @JsonProperty("max-state-bytes")
        public Long maxStateBytes;
        /** Primary: a held frame starts a checkpoint at once (within the pause budget); false: only the interval. */
        @JsonProperty("output-trigger")
        public Boolean outputTrigger;
        /** Primary: the long-run share of time output-triggered checkpoints may keep the guest paused. */
        @JsonProperty("max-paused-percent")
        public Integer maxPausedPercent;
        /** Primary: the least time from the end of a checkpoint to an output-triggered start of the next. */
        @JsonProperty("min-checkpoint-gap-ms")
        public Long minCheckpointGapMs;
        /** Primary: wait this long after the first held frame for the rest of a burst before an output checkpoint. */
        @JsonProperty("output-linger-us")
        public Long outputLingerUs;
        /** Hybrid mode: how long a held frame may wait for the secondary's matching frame before a checkpoint. */
        @JsonProperty("compare-timeout-ms")
        public Long compareTimeoutMs;
        /** Hybrid mode: how far apart the two guests' HTTP Date values may be (0: byte for byte; default 1000). */
        @JsonProperty("http-date-tolerance-ms")
        public Long httpDateToleranceMs;

        private ColoConfig engine;

        /** The engine's concluded configuration, made by {@link ConfigLoader}. */
        public ColoConfig engine()
        {
            return engine;
        }

        void engine(final ColoConfig e)
        {
            engine = e;
        }
    }

    public static final class Disk
    {
        /** An image file, of the same size (as the guest sees it) on both hosts. */
        public String image;
        /** raw (default) or qcow2 (its backing file, if any, must have the same content on both hosts). */
        public DiskFormat format = DiskFormat.RAW;
        /**
         * Primary: ship the disk's writes with each checkpoint (default). False only for labs and control runs: the
         * standby's disk then falls behind, and a failover resumes RAM over an older disk.
         */
        public boolean replicate = true;
        /**
         * Primary: take a checkpoint early once the guest wrote this many MiB to the disk since the last one, so a
         * pause (which copies them) stays short. 0: never early.
         */
        @JsonProperty("early-checkpoint-mib")
        public int earlyCheckpointMib = 16;
    }

    public enum DiskFormat
    {
        RAW, QCOW2
    }

    public enum Firmware
    {
        BIOS, UEFI
    }

    public static final class Nic
    {
        public String tap;
        public String mac;
        public String bridge;
        public Buffer buffer = Buffer.TAP;
        /** NFQUEUE backend: queue number (unique per host) and fail-open (never by default). */
        @JsonProperty("queue-num")
        public int queueNum = -1;
        @JsonProperty("fail-open")
        public boolean failOpen = false;

        // the limits: null = BufferLimits' default
        @JsonProperty("max-frames")
        public Integer maxFrames;
        @JsonProperty("max-bytes")
        public Long maxBytes;
        @JsonProperty("high-water-percent")
        public Integer highWaterPercent;
        public BufferLimits.Policy policy;

        private BufferLimits limits;

        /** The output-commit backend {@code buffer} names, found by that name among the providers. */
        public BackendProvider backend()
        {
            return BackendProvider.named(buffer.name().toLowerCase());
        }

        /** This NIC on another tap (a hybrid failover's running copy), everything else the same. */
        public Nic onTap(final String otherTap)
        {
            final Nic n = new Nic();
            n.tap = otherTap;
            n.mac = mac;
            n.bridge = bridge;
            n.buffer = buffer;
            n.queueNum = queueNum;
            n.failOpen = failOpen;
            n.maxFrames = maxFrames;
            n.maxBytes = maxBytes;
            n.highWaterPercent = highWaterPercent;
            n.policy = policy;
            n.limits = limits;
            return n;
        }

        /** The NIC as its backend needs it. */
        public BackendProvider.NicSpec spec(final Vm vm)
        {
            return new BackendProvider.NicSpec(vm.name, tap, bridge, vm.netns, queueNum, failOpen);
        }

        /** The NIC's concluded limits, made by {@link ConfigLoader}. */
        public BufferLimits limits()
        {
            return limits;
        }

        void limits(final BufferLimits l)
        {
            limits = l;
        }
    }
}
