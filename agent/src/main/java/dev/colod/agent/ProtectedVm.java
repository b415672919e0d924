package dev.colod.agent;

import dev.colod.agent.arbiter.EtcdArbiter;
import dev.colod.agent.arbiter.EtcdGateway;
import dev.colod.agent.config.ColodConfig;
import dev.colod.agent.config.ConfigLoader;
import dev.colod.agent.control.Maintenance;
import dev.colod.agent.control.VmHandle;
import dev.colod.agent.control.VmStatus;
import dev.colod.agent.qemu.Leftovers;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.agent.tls.PeerTls;
import dev.colod.agent.vm.HugePages;
import dev.colod.agent.vm.QemuFailover;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.agent.vm.RunningCopy;
import dev.colod.agent.vm.StandbyImage;
import dev.colod.agent.vm.WriteTrackingPreload;
import dev.colod.buffer.BackendProvider;
import dev.colod.buffer.EpochLedger;
import dev.colod.buffer.FrameLedger;
import dev.colod.buffer.HeldRecord;
import dev.colod.buffer.VmOutputCommit;
import dev.colod.buffer.hybrid.Comparer;
import dev.colod.buffer.hybrid.CopyMirror;
import dev.colod.buffer.hybrid.PrimaryMirror;
import dev.colod.buffer.hybrid.TcpRewriter;
import dev.colod.core.ColoConfig;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.ProtectionState;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.Transport;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.spi.FrameMirror;
import dev.colod.core.spi.OutputCommit;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.spi.VmStateSource;
import dev.colod.core.status.ColoCounters;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.IoEventLoop;
import org.HdrHistogram.Histogram;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.function.Supplier;
import java.util.function.UnaryOperator;
import javax.net.ssl.SSLContext;

/**
 * One VM of colod.yaml on this host, wired once for everyone: the daemon, the demo and the end-to-end tests.
 * Primary: QEMU, each NIC's output commit (TAP or NFQUEUE backend under an {@link EpochLedger}), the primary
 * engine. Secondary: the standby image, failover, the secondary engine. Leftovers of an earlier run are
 * recovered first. {@link #protect()} starts the engine; {@link #close()} undoes everything in reverse order.
 * <p>
 * Output never calls the engine: the engine polls {@link OutputCommit#wantsCheckpoint()}. The wiring has no cycle.
 */
public final class ProtectedVm implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(ProtectedVm.class);

    /**
     * What a lab may change around the daemon's wiring: where the replication link's sockets and the arbiter
     * client's sockets come from (a network namespace), a wrapper of the VM state source or sink (to observe
     * checkpoints), and output commit off (a control run that shows what output commit prevents). The daemon
     * uses {@link #DAEMON}.
     */
    public record Hooks(Transport transport, EtcdGateway.SocketFactory arbiterSockets, UnaryOperator<VmStateSource> source,
                        Function<StandbyImage, VmStateSink> sink, boolean outputCommit)
    {
        public static final Hooks DAEMON = new Hooks(Transport.DEFAULT, Socket::new, s -> s, i -> i, true);
    }

    private final String name;
    private final Closers closers = new Closers(ex -> LOG.warn("stopping: {}", ex.toString()));
    /** The one thread that switches this host's role at run time (secondary -> primary after a failover). */
    private final ExecutorService roleSwitch;
    // what open() found and built the VM from; set once there, read by every step after
    private ColodConfig config;
    private ColodConfig.Vm v;
    private VmSpec spec;
    private Path runDir;
    private EventLoopGroup loops;
    private Hooks hooks;
    // what runs: set by open() or, after a failover, on the role-switch thread; read by any thread
    private volatile QemuProcess qemu;
    private volatile QemuStateSource stateSource;
    private volatile VmOutputCommit output;
    /** Hybrid mode: this host's side of the frames channel as primary (for status); null otherwise. */
    private volatile PrimaryMirror primaryMirror;
    private volatile PrimaryEngine primary;
    private volatile QemuFailover failover;
    private volatile SecondaryEngine secondary;
    private volatile VmHandle handle;
    /** The handle shown already for this VM (a side opened again by standby), else null. */
    private VmHandle shown;
    private volatile RoleFile role;
    private Path fenced;
    private Arbiter arbiter = Arbiter.NONE;
    /** The replication channels' mutual TLS; null with {@code insecure: true}. */
    private PeerTls tls;

    private ProtectedVm(final String name)
    {
        this.name = name;
        this.roleSwitch = Executors.newSingleThreadExecutor(r ->
        {
            final Thread t = new Thread(r, "colod-" + name + "-reprotect");
            t.setDaemon(true);
            return t;
        });
    }

    /** Builds the VM's side on this host (starting QEMU on the primary); the engine waits for {@link #protect()}. */
    public static ProtectedVm open(final ColodConfig config, final ColodConfig.Vm v, final EventLoopGroup loops,
        final Hooks given) throws Exception
    {
        return open(config, v, loops, given, null);
    }

    /**
     * As above; {@code shown}, if not null, is the handle the control socket and metrics already show for this VM
     * (a side opened again by {@code coloctl standby}): it shows this side from now on, role changes included.
     */
    public static ProtectedVm open(final ColodConfig config, final ColodConfig.Vm v, final EventLoopGroup loops,
        final Hooks given, final VmHandle shown) throws Exception
    {
        final ProtectedVm vm = new ProtectedVm(v.name);
        vm.shown = shown;
        try
        {
            final Hooks hooks = secured(config, v, given);
            if (hooks.transport() instanceof PeerTls t)
            {
                vm.tls = t;
            }
            if (v.engine().mode() == ColoConfig.Mode.HYBRID)
            {
                LOG.info("vm={} mode: hybrid: the secondary runs a copy of the VM with the same input; a frame leaves " +
                    "as soon as the copy sent the same, and a checkpoint follows a mismatch, the compare timeout ({} ms) " +
                    "or the interval ({} ms)", v.name, v.engine().compareTimeoutMs(), v.engine().checkpointDelayMs());
            }
            vm.arbiter = arbiter(config, v, hooks);
            vm.closers.add(vm.arbiter); // closed last: engines stop first
            final Path runDir = Path.of(config.runtimeDir).resolve(v.name);
            // kept across reboots: a fenced host must not boot the VM on its own after a power cycle either
            vm.fenced = Path.of(config.stateDir).resolve(v.name).resolve("fenced");
            final VmSpec spec = new VmSpec(v.name, v.memoryMib, v.vcpus, v.kernel == null ? null : Path.of(v.kernel),
                v.initrd == null ? null : Path.of(v.initrd), v.append,
                v.nics.stream().map(n -> new VmSpec.Nic(n.tap, n.mac, n.backend().needsPlainFrames())).toList(), v.accel.name().toLowerCase(),
                Path.of(config.ramDir), v.extraArgs, disks(v),
                v.firmware == ColodConfig.Firmware.UEFI ? Path.of(v.uefiCode) : null).check();
            vm.config = config;
            vm.v = v;
            vm.spec = spec;
            vm.runDir = runDir;
            vm.loops = loops;
            vm.hooks = hooks;
            final InetSocketAddress peer = address(v.peer);
            // with listen set, roles follow the VM: the role recorded here wins over the configured one
            final Path stateDir = Path.of(config.stateDir);
            final boolean follow = v.listen != null;
            final RoleFile recorded = follow ? RoleFile.read(stateDir, v.name) : null;
            final Path ramFile = ramFile(config, v);
            final boolean startsPrimary = (recorded != null ? recorded.role() : v.role) == ColodConfig.Role.PRIMARY;
            final boolean fencedHere = startsPrimary && Files.exists(vm.fenced);
            // after a failover to this host its QEMU runs on the standby image's RAM file
            // (and the RAM file of either page size: the setting may have changed since it started)
            final List<Path> ramFiles = List.of(ramFile, StandbyImage.ramFileIn(imageDir(config, v)),
                ramFileIn(config.ramDir, v), ramFileIn(config.hugepageDir, v));
            if (startsPrimary && !fencedHere)
            {
                vm.qemu = QemuProcess.adopt(spec, runDir, ramFiles, true).orElse(null);
            }
            final RoleDecision.Outcome outcome;
            try
            {
                outcome = RoleDecision.decide(new RoleDecision.Facts(v.role, recorded == null ? null : recorded.role(),
                    follow, fencedHere, vm.qemu != null, () -> peerRunsIt(v, peer, hooks)));
            }
            catch (final UncheckedIOException ex)
            {
                throw ex.getCause();
            }
            switch (outcome)
            {
                case REFUSE_FENCED -> refuseIfFenced(v.name, vm.fenced);
                case SECONDARY_AFTER_FENCE ->
                {
                    // the other host runs the VM since it took it over: this host stands by for it now
                    LOG.warn("vm={} was fenced here ({}): becoming its secondary", v.name,
                        Files.readString(vm.fenced).trim());
                    QemuProcess.adopt(spec, runDir, ramFiles, false).ifPresent(QemuProcess::close); // the fenced copy, never resumed
                    Files.delete(vm.fenced);
                }
                case SECONDARY_PEER_RUNS_IT -> LOG.warn("vm={} ran here before, its QEMU is gone, and {} runs it since a " +
                    "failover: becoming its secondary", v.name, v.peer);
                case PRIMARY, SECONDARY ->
                {
                    // as found
                }
            }
            final ColodConfig.Role role = outcome == RoleDecision.Outcome.PRIMARY ? ColodConfig.Role.PRIMARY
                : ColodConfig.Role.SECONDARY;
            RoleFile now = recorded != null ? recorded : new RoleFile(role, Instant.now(), 0);
            if (outcome.afterFailover())
            {
                now = now.as(role, now.failovers() + 1);
            }
            if (follow)
            {
                now.write(stateDir, v.name);
            }
            vm.role = follow ? now : null; // without listen, roles are fixed and nothing is recorded
            if (vm.qemu == null)
            {
                recoverLeftovers(v.name, runDir);
            }
            // adopted: the crashed agent's plumbing stays until replaced, so the VM's output never goes out unheld
            if (role == ColodConfig.Role.PRIMARY)
            {
                vm.openPrimary(peer);
            }
            else
            {
                vm.openSecondary(v.listen != null ? address(v.listen) : peer);
            }
            return vm;
        }
        catch (final Exception ex)
        {
            vm.close();
            throw ex;
        }
    }

    /** The replication channels with mutual TLS from the config, or plaintext with {@code insecure: true} (warned). */
    private static Hooks secured(final ColodConfig config, final ColodConfig.Vm v, final Hooks hooks) throws IOException
    {
        if (config.tls == null)
        {
            LOG.warn("vm={} INSECURE (insecure: true): replication runs in plaintext, VM memory crosses the wire in clear " +
                "and any host that reaches {} can speak the protocol; use tls outside a lab", v.name,
                v.listen != null ? v.listen : v.peer);
            return hooks;
        }
        final String peerName = v.peerName.isEmpty() ? v.peer.substring(0, v.peer.lastIndexOf(':')) : v.peerName;
        final PeerTls tls = PeerTls.load(hooks.transport(), Path.of(config.tls.ca), Path.of(config.tls.cert),
            Path.of(config.tls.key), peerName, config.tls.sealedChunks);
        LOG.info("vm={} replication over mutual TLS 1.3 (CA {}, this host {}, peer must be {}); data after the handshake " +
            "in {}", v.name, config.tls.ca, config.tls.cert, peerName, config.tls.sealedChunks
            ? "sealed chunks where the peer offers them too, else TLS records" : "TLS records (sealed-chunks: false)");
        return new Hooks(tls, hooks.arbiterSockets(), hooks.source(), hooks.sink(), hooks.outputCommit());
    }

    /** The VM's arbiter from the config: etcd, or none (warned about at every start). */
    private static Arbiter arbiter(final ColodConfig config, final ColodConfig.Vm v, final Hooks hooks)
        throws IOException
    {
        final ColodConfig.Arbiter a = config.arbiter;
        if (a == null || a.none())
        {
            LOG.warn("vm={} UNARBITRATED (arbiter: none): a cut replication link runs two copies of this VM; use etcd " +
                "outside a lab", v.name);
            return Arbiter.NONE;
        }
        final String host = config.hostName.isEmpty() ? InetAddress.getLocalHost().getHostName() : config.hostName;
        final SSLContext etcdTls = a.ca == null ? null : PeerTls.context("TLS", Path.of(a.ca),
            a.cert == null ? null : Path.of(a.cert), a.key == null ? null : Path.of(a.key));
        final EtcdArbiter e = new EtcdArbiter(new EtcdArbiter.Settings(a.etcd.stream().map(URI::create).toList(),
            a.prefix, host, a.leaseTtlMs, a.safetyMarginMs, a.requestTimeoutMs, etcdTls), v.name,
            hooks.arbiterSockets());
        // a restarted colod carries on with its host's newest hold: it never says HELLO with an older token
        final Path stateDir = Path.of(config.stateDir);
        e.knownToken(TokenFile.readHeld(stateDir, v.name)).onHeldToken(t -> TokenFile.writeHeld(stateDir, v.name, t));
        LOG.info("vm={} arbitrated by etcd {} as host {}", v.name, a.etcd, host);
        return e;
    }

    private static InetSocketAddress address(final String hostPort)
    {
        return ConfigLoader.socketAddress(hostPort);
    }

    /**
     * The VM ran here before and its QEMU is gone: ask the peer whether it runs it now. Refuses to go on when the
     * peer cannot be asked: starting the VM here could make a second copy.
     */
    /** Whether the peer runs the VM since a failover; unanswered: refused (no second copy), as unchecked. */
    private static boolean peerRunsIt(final ColodConfig.Vm v, final InetSocketAddress peer, final Hooks hooks)
    {
        try
        {
            return PrimaryEngine.probe(v.engine(), peer, hooks.transport()) == Welcome.FAILED_OVER;
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException("vm " + v.name + " ran here as primary before and its QEMU is gone, and its peer " +
                v.peer + " cannot be asked whether it runs the VM now (" + ex.getMessage() + "): not starting a second " +
                "copy; start colod again once the peer answers", ex);
        }
    }

    /** {@code marker} says the secondary took this VM over: this host must not run it as primary again on its own. */
    private static void refuseIfFenced(final String vm, final Path marker) throws IOException
    {
        if (Files.exists(marker))
        {
            throw new IOException("vm " + vm + " was fenced here (" + Files.readString(marker).trim() + "): its secondary " +
                "runs it, so this host does not start or resume it as primary; make this host the secondary, or delete " +
                marker + " once the other copy is stopped");
        }
    }

    private static void recoverLeftovers(final String vm, final Path runDir) throws Exception
    {
        for (final String left : Leftovers.scan(runDir))
        {
            LOG.warn("vm={} left by an earlier run: {}", vm, left);
        }
        Leftovers.removeStale(runDir);
        for (final BackendProvider backend : BackendProvider.all())
        {
            for (final String fixed : backend.recover(runDir.resolve("plumbing")))
            {
                LOG.warn("vm={} repaired after an unclean stop ({} backend): {}", vm, backend.name(), fixed);
            }
        }
        final Path plumbing = runDir.resolve("plumbing");
        if (Files.isDirectory(plumbing))
        {
            try (var held = Files.list(plumbing))
            {
                for (final Path f : (Iterable<Path>)held.filter(HeldRecord::isRecord)::iterator)
                {
                    leftByCrashedAgent(vm, f);
                }
            }
        }
    }

    private void openPrimary(final InetSocketAddress peer) throws Exception
    {
        final Path ramFile = ramFile(config, v);
        final boolean adopted = qemu != null;
        if (!adopted && v.ramPageSize == ColodConfig.RamPageSize.PAGE_2M)
        {
            final String problem = HugePages.problem("hugepage-dir", Path.of(config.hugepageDir), ramFile,
                spec.memoryBytes());
            if (problem != null)
            {
                throw new IOException("vm " + v.name + " (ram-page-size: 2m) cannot start: " + problem);
            }
        }
        FrameLedger.Mode initial = adopted ? FrameLedger.Mode.HOLD : FrameLedger.Mode.PASS_THROUGH;
        if (arbiter.arbitrated() && !adopted)
        {
            // a fresh start serves only with the VM's key; another holder means the VM runs there: no second copy
            final Arbiter.Verdict verdict = arbiter.goUnprotected(0);
            if (verdict.kind() == Arbiter.Verdict.Kind.FENCE)
            {
                throw new IOException("vm " + v.name + " is not started here: " + verdict.detail() + " (arbiter: " +
                    arbiter.describe() + ")");
            }
            if (verdict.kind() != Arbiter.Verdict.Kind.GRANTED)
            {
                LOG.error("vm={} starts with its output held: the arbiter does not grant it yet ({})", v.name,
                    verdict.detail());
                initial = FrameLedger.Mode.HOLD;
            }
        }
        else if (arbiter.arbitrated())
        {
            initial = FrameLedger.Mode.HOLD;
        }
        final QemuProcess q = adopted ? qemu : QemuProcess.start(spec, runDir, ramFile, QemuProcess.Incoming.NONE, v.netns,
            v.writeTracking == ColodConfig.WriteTracking.COMPARE ? Map.of() : WriteTrackingPreload.environment(runDir, ramFile));
        qemu = q;
        closers.add(() ->
        {
            if (config.onStop == ColodConfig.OnStop.STOP)
            {
                q.close();
            }
        });
        // adopted, or not granted: nothing leaves unheld until the engine (and the arbiter) say so
        try
        {
            protectRunning(q, peer, initial);
        }
        catch (final Exception ex)
        {
            if (!adopted)
            {
                // a failed start leaves nothing it started behind: no orphaned QEMU running the guest unprotected
                LOG.error("vm={} start-up failed after QEMU (pid {}) started: stopping it: {}", v.name, q.pid(),
                    ex.getMessage());
                q.kill();
                qemu = null;
            }
            throw ex;
        }
        handle = show(VmHandle.primary(v.name, primary, output::stats, primaryDetails(), pauseSteps()));
    }

    /** Output commit on {@code q}'s NICs, its checkpoint source and the primary engine toward {@code peer} (not started). */
    private void protectRunning(final QemuProcess q, final InetSocketAddress peer, final FrameLedger.Mode initial)
        throws Exception
    {
        final List<EpochLedger> nics = new ArrayList<>();
        // after a hybrid failover the running copy is the VM: its NICs are on its own taps, and connections opened
        // since the last checkpoint still need their sequence numbers shifted on the way through
        final QemuFailover f = failover;
        final List<String> taps = f != null && f.running() == q ? f.runningTaps() : null;
        final TcpRewriter rewriter = f != null && f.running() == q ? f.rewriter() : null;
        if (hooks.outputCommit())
        {
            for (int i = 0; i < v.nics.size(); i++)
            {
                final ColodConfig.Nic n = taps == null ? v.nics.get(i) : v.nics.get(i).onTap(taps.get(i));
                final EpochLedger ledger = openNic(n, runDir.resolve("plumbing"), (IoEventLoop)loops.next(), initial);
                if (rewriter != null)
                {
                    ledger.rewriteWith(rewriter);
                }
                nics.add(ledger);
            }
        }
        output = new VmOutputCommit(v.name, nics);
        PrimaryMirror mirror = null;
        if (v.engine().mode() == ColoConfig.Mode.HYBRID && !nics.isEmpty())
        {
            mirror = new PrimaryMirror(v.name, nics.size(), i -> nics.get(i).mirrorSide());
            for (int i = 0; i < nics.size(); i++)
            {
                // a matched frame leaves at once: a failover continues the running copy that sent it too
                nics.get(i).compareWith(i, mirror, v.engine().compareTimeoutMs() * 1_000_000L, true,
                    v.engine().httpDateToleranceMs());
            }
        }
        primaryMirror = mirror;
        stateSource = stateSource(v, q);
        closers.add(stateSource);
        final PrimaryEngine engine = new PrimaryEngine(v.engine(), peer, hooks.source().apply(stateSource),
            hooks.outputCommit() ? output : OutputCommit.NONE, new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM)
            .transport(hooks.transport()).arbiter(arbiter);
        if (mirror != null)
        {
            engine.frames(mirror);
        }
        primary = engine;
        engine.addExitListener(e ->
        {
            if (engine.state() == ProtectionState.FENCED)
            {
                try
                {
                    Files.createDirectories(fenced.getParent());
                    Files.writeString(fenced, Instant.now() + ": " + e.detail() + "\n");
                }
                catch (final IOException ex)
                {
                    LOG.error("vm={} could not record the fence in {}: {}", v.name, fenced, ex.toString());
                }
            }
        });
    }

    private Supplier<Map<String, Histogram>> pauseSteps()
    {
        return VmStatus.pauseSteps(stateSource, primary.counters());
    }

    /** Hybrid mode, primary: the frames channel's counters (null otherwise). */
    public PrimaryMirror.Stats framesChannel()
    {
        final PrimaryMirror pm = primaryMirror;
        return pm == null ? null : pm.stats();
    }

    private Supplier<Map<String, Object>> primaryDetails()
    {
        final Supplier<Map<String, Object>> base = VmStatus.primary(stateSource, primary.counters(), !disks(v).isEmpty(),
            this::roleDetails);
        return () ->
        {
            final Map<String, Object> m = base.get();
            final PrimaryMirror pm = primaryMirror;
            if (pm != null)
            {
                final List<Comparer.Stats> per = new ArrayList<>();
                output.ledgers().forEach(l -> per.add(l.comparison()));
                m.put("comparison", VmStatus.comparison(pm.stats(), per));
            }
            return m;
        };
    }

    /** Since when this host has its role, and the failovers it has seen (with roles that follow the VM). */
    private Map<String, Object> roleDetails()
    {
        final RoleFile r = role;
        final SecondaryEngine s = secondary;
        final long engineFailovers = s == null ? 0 : s.counters().failovers.get();
        final PeerTls t = tls;
        final Map<String, Object> m = VmStatus.role(arbiter, t == null ? "plaintext (insecure: true)" : t.describe(),
            r == null ? null : r.since(), r == null ? 0 : Math.max(r.failovers(), engineFailovers));
        if (t != null)
        {
            m.put("tls_sealed_channels", t.sealedChannels());
            m.put("tls_record_channels", t.recordChannels());
        }
        return m;
    }

    /** The checkpoint source with the configured write tracking; AUTO falls back to compare, saying why. */
    private static QemuStateSource stateSource(final ColodConfig.Vm v, final QemuProcess q) throws IOException
    {
        final QemuStateSource s = trackedSource(v, q);
        // the pause copies what all disks wrote: the smallest threshold of any disk bounds the total
        final long early = v.disks.stream().mapToLong(d -> (long)d.earlyCheckpointMib << 20).filter(b -> b > 0).min()
            .orElse(0);
        return v.disks.isEmpty() ? s : s.earlyCheckpointDiskBytes(early);
    }

    /**
     * Null when a failover could resume the VM here now from {@code image}, else why not, naming what is missing:
     * checked before an operator's failover fences the primary.
     */
    private String canResume(final StandbyImage image)
    {
        if (!image.resumable())
        {
            return image.lastCommitted() == 0 ? "the standby image holds no checkpoint yet"
                : "the standby image is still being synchronised (checkpoint " + image.lastCommitted() +
                " is a base image; resumable after the next checkpoint)";
        }
        if (!Files.isRegularFile(image.deviceStateFile()))
        {
            return "the committed device state " + image.deviceStateFile() + " is missing";
        }
        try
        {
            if (!Files.isRegularFile(image.ramFile()) || Files.size(image.ramFile()) != spec.memoryBytes())
            {
                return "the committed RAM image " + image.ramFile() + " is missing or not " + spec.memoryBytes() + " bytes";
            }
        }
        catch (final java.io.IOException ex)
        {
            return "cannot read " + image.ramFile() + ": " + ex.getMessage();
        }
        for (final VmSpec.Disk d : spec.disks())
        {
            if (!Files.isRegularFile(d.image()))
            {
                return "disk image " + d.image() + " is missing";
            }
        }
        if (spec.firmwareCode() != null && !Files.isReadable(spec.firmwareCode()))
        {
            return "the UEFI firmware " + spec.firmwareCode() + " is missing";
        }
        if ("kvm".equals(spec.accel()) && !Files.exists(Path.of("/dev/kvm")))
        {
            return "accel is kvm but /dev/kvm does not exist on this host";
        }
        if (!dev.colod.os.HostTools.onPath("qemu-system-x86_64"))
        {
            return "qemu-system-x86_64 is not installed here (Debian package qemu-system-x86)";
        }
        // e.g. the primary's colod stopped and its VM serves on unprotected: resuming here would be a second copy
        return arbiter.whyNotResumable(image.lastCommitted());
    }

    /** Whether the disks go with each checkpoint (false only for control runs; the same on every disk). */
    private static boolean replicateDisks(final ColodConfig.Vm v)
    {
        return v.disks.isEmpty() || v.disks.get(0).replicate;
    }

    /** The VM's disks as QEMU runs them, and a UEFI VM's variable store last: all replicated with each checkpoint. */
    private static List<VmSpec.Disk> disks(final ColodConfig.Vm v)
    {
        final List<VmSpec.Disk> d = new ArrayList<>(v.disks.stream()
            .map(x -> new VmSpec.Disk(Path.of(x.image), VmSpec.DiskFormat.valueOf(x.format.name()))).toList());
        if (v.firmware == ColodConfig.Firmware.UEFI)
        {
            d.add(new VmSpec.Disk(Path.of(v.uefiVars), VmSpec.DiskFormat.RAW, VmSpec.DiskKind.UEFI_VARS));
        }
        return d;
    }

    private static QemuStateSource trackedSource(final ColodConfig.Vm v, final QemuProcess q) throws IOException
    {
        final boolean disk = !disks(v).isEmpty() && replicateDisks(v);
        switch (v.writeTracking)
        {
            case COMPARE:
                return new QemuStateSource(q, QemuStateSource.Tracking.COMPARE, v.writeAuditPages, disk);
            case KERNEL:
                return new QemuStateSource(q, QemuStateSource.Tracking.KERNEL, v.writeAuditPages, disk);
            default:
                try
                {
                    return new QemuStateSource(q, QemuStateSource.Tracking.KERNEL, v.writeAuditPages, disk);
                }
                catch (final IOException ex)
                {
                    LOG.warn("vm={} kernel write tracking unavailable, comparing RAM with a copy instead " +
                        "(write-tracking: auto): {}", v.name, ex.getMessage());
                    return new QemuStateSource(q, QemuStateSource.Tracking.COMPARE, v.writeAuditPages, disk);
                }
        }
    }

    private EpochLedger openNic(final ColodConfig.Nic n, final Path plumbingDir, final IoEventLoop loop,
        final FrameLedger.Mode initial) throws Exception
    {
        final Path heldFile = HeldRecord.fileOf(plumbingDir, n.tap);
        final long heldByCrashed = leftByCrashedAgent(v.name, heldFile);
        final BackendProvider backend = n.backend();
        final List<String> missing = backend.missing();
        if (!missing.isEmpty())
        {
            throw new IOException("vm " + v.name + " nic " + n.tap + ": buffer: " + backend.name() +
                " needs what this host lacks: " + String.join(", ", missing));
        }
        final BackendProvider.Installed installed = backend.install(n.spec(v), plumbingDir);
        final EpochLedger[] opened = new EpochLedger[1];
        closers.add(() -> leaveOrRemove(n.tap, opened[0], installed.plumbing()));
        final long droppedMeanwhile = installed.droppedMeanwhile();
        final EpochLedger ledger = EpochLedger.open(n.tap, loop, n.limits(), installed.backend(), initial,
            HeldRecord.create(heldFile));
        opened[0] = ledger;
        closers.add(ledger);
        if (droppedMeanwhile > 0)
        {
            LOG.warn("vm={} nic={}: the kernel dropped {} guest frames at the redirect a crashed agent left (its tap " +
                "gone or full): they never reached an agent", v.name, n.tap, droppedMeanwhile);
        }
        ledger.lostInAgentRestart(heldByCrashed + droppedMeanwhile);
        return ledger;
    }

    /**
     * Frames that the agent before this one held for the NIC whose record is {@code heldFile} when it ended without
     * a clean stop (logged; the record goes): they died with it, never released.
     */
    private static long leftByCrashedAgent(final String vm, final Path heldFile)
    {
        try
        {
            final HeldRecord.Left left = HeldRecord.takeLeft(heldFile).orElse(null);
            if (left == null)
            {
                return 0;
            }
            if (left.frames() == 0)
            {
                LOG.info("vm={} {}: the agent before this one ended without a clean stop, holding no frames", vm,
                    heldFile.getFileName());
                return 0;
            }
            LOG.warn("vm={} {}: the agent before this one ended without a clean stop while holding {} frames ({} " +
                "bytes): dropped with it, never released (they may belong to a checkpoint the secondary never " +
                "acknowledged)", vm, heldFile.getFileName(), left.frames(), left.bytes());
            return left.frames();
        }
        catch (final IOException ex)
        {
            LOG.warn("vm={} {}", vm, ex.getMessage());
            return 0;
        }
    }

    private void openSecondary(final InetSocketAddress listen) throws Exception
    {
        final QemuFailover f = new QemuFailover(spec, runDir, v.netns, v.standby == ColodConfig.Standby.HOT)
            .bridges(v.nics.stream().map(n -> n.bridge).toList())
            .trackWrites(v.listen != null && v.writeTracking != ColodConfig.WriteTracking.COMPARE);
        failover = f;
        closers.add(() ->
        {
            final QemuProcess running = f.running();
            if (config.onStop == ColodConfig.OnStop.STOP && running != null)
            {
                running.close();
            }
        });
        closers.add(f);
        final StandbyImage image = new StandbyImage(imageDir(config, v), v.name, f);
        final Path outdatedFile = Path.of(config.stateDir).resolve(v.name).resolve("outdated");
        final CopyMirror mirror = v.engine().mode().secondaryRuns() ? new CopyMirror(v.name) : null;
        if (mirror != null)
        {
            f.runningCopy(new RunningCopy(spec, runDir.resolve("copies"), v.netns, image.ramFile(),
                image.deviceStateFile(), mirror));
        }
        if (!disks(v).isEmpty())
        {
            image.disks(disks(v), replicateDisks(v));
            closers.add(image::releaseDisks);
        }
        secondary = new SecondaryEngine(v.engine(), listen, hooks.sink().apply(image), new ColoCounters(),
            ProtocolTap.NONE, NanoClock.SYSTEM).transport(hooks.transport()).arbiter(arbiter)
            .knownToken(TokenFile.read(Path.of(config.stateDir), v.name))
            .onNewerToken(t -> TokenFile.write(Path.of(config.stateDir), v.name, t))
            .holdFailovers(new Maintenance(Path.of(config.stateDir))::why)
            .outdated(outdatedRecord(outdatedFile))
            .onOutdated(why -> recordOutdated(outdatedFile, why))
            .frames(mirror == null ? FrameMirror.NONE : mirror);
        handle = show(VmHandle.secondary(v.name, secondary, VmStatus.secondary(this::roleDetails, image.diskImages(),
            f.runningCopy(), mirror, secondary.counters())).failoverCheck(() -> canResume(image)));
        if (v.listen != null)
        {
            // roles follow the VM: after a failover this host is the primary and protects the VM again
            secondary.addExitListener(e ->
            {
                if (e.failedOver())
                {
                    try
                    {
                        roleSwitch.execute(this::becomePrimary);
                    }
                    catch (final RejectedExecutionException stopping)
                    {
                        // the VM runs here now: the next colod must find this host its primary and adopt it
                        try
                        {
                            recordPrimary();
                        }
                        catch (final UncheckedIOException ex)
                        {
                            LOG.error("vm={} runs here now, but its role file could not say so: {}", v.name,
                                ex.getCause().toString());
                        }
                        LOG.warn("vm={} failed over here while colod stops: not protecting it again now (the next " +
                            "colod adopts it as primary)", v.name);
                    }
                }
            });
        }
    }

    /** What an earlier colod recorded about its standby being outdated (no arbiter), or null. */
    private static String outdatedRecord(final Path file)
    {
        try
        {
            return Files.exists(file) ? Files.readString(file).trim() : null;
        }
        catch (final IOException ex)
        {
            return "unknown (" + file + " unreadable: " + ex.getMessage() + ")";
        }
    }

    /** Keeps the standby's outdated record across restarts ({@code why} null: current again). */
    private void recordOutdated(final Path file, final String why)
    {
        try
        {
            if (why == null)
            {
                Files.deleteIfExists(file);
                LOG.info("vm={} the standby is current again", v.name);
                return;
            }
            TokenFile.replace(file, why + "\n");
            LOG.warn("vm={} the standby is outdated (no arbiter): {}; an operator's failover needs --force", v.name, why);
        }
        catch (final IOException ex)
        {
            LOG.error("vm={} could not record the standby's state in {}: {}", v.name, file, ex.toString());
        }
    }

    /** The handle to show {@code fresh} through: the one shown already for this VM, if any, else {@code fresh}. */
    private VmHandle show(final VmHandle fresh)
    {
        if (shown == null)
        {
            return fresh;
        }
        shown.replaceWith(fresh);
        return shown;
    }

    /**
     * After this host's failover: it is the VM's primary now (recorded in the role file). Output commit goes on the
     * resumed QEMU's NICs (passing: it serves unprotected until a secondary is there) and the primary engine
     * connects to the other host, where colod becomes the secondary when it comes back; with reprotect: manual,
     * only on {@code coloctl reprotect}.
     */
    private void becomePrimary()
    {
        try
        {
            recordPrimary();
            // a hybrid failover's running copy maps its RAM privately: it moves to a shared RAM file first (4 KiB
            // pages, whatever ram-page-size says: the copy's RAM is not on hugetlbfs)
            final Path ramFile = ramFileIn(config.ramDir, v);
            final QemuProcess q = failover.running() == null || failover.running().sharedRam() ? failover.running()
                : failover.moveToSharedRam(ramFile, v.writeTracking == ColodConfig.WriteTracking.COMPARE ? Map.of()
                    : WriteTrackingPreload.environment(runDir, ramFile)); // (which removes the running QEMU's status file)
            qemu = q;
            protectRunning(q, address(v.peer), FrameLedger.Mode.PASS_THROUGH);
            final PrimaryEngine engine = primary;
            closers.add(engine);
            final boolean manual = v.reprotect == ColodConfig.Reprotect.MANUAL;
            handle.becamePrimary(engine, output::stats, primaryDetails(), pauseSteps(), manual ? engine::start : null);
            if (manual)
            {
                LOG.warn("vm={} runs here as primary now, unprotected; `coloctl reprotect {}` protects it again", v.name,
                    v.name);
            }
            else
            {
                engine.start();
                LOG.warn("vm={} runs here as primary now; protecting it again as soon as {} stands by", v.name, v.peer);
            }
        }
        catch (final Exception ex)
        {
            LOG.error("vm={} failed over here but cannot protect it again: {}", v.name, ex.toString(), ex);
        }
    }

    /** This host runs the VM since a failover: the role file says primary (once per failover). */
    private synchronized void recordPrimary()
    {
        if (role.role() == ColodConfig.Role.PRIMARY)
        {
            return;
        }
        role = role.as(ColodConfig.Role.PRIMARY, role.failovers() + 1);
        try
        {
            role.write(Path.of(config.stateDir), v.name);
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException(ex);
        }
    }

    /** Starts protecting: the primary connects to its secondary; the secondary listens. */
    public ProtectedVm protect() throws Exception
    {
        if (primary != null)
        {
            primary.start();
            closers.add(primary); // closed first: held frames let out, the VM left running unprotected
        }
        else
        {
            secondary.start();
            closers.add(secondary);
        }
        return this;
    }

    public String name()
    {
        return name;
    }

    /** What the control socket and metrics see. */
    public VmHandle handle()
    {
        return handle;
    }

    /** Primary: the engine, else null. */
    public PrimaryEngine primary()
    {
        return primary;
    }

    /** Secondary: the engine, else null. */
    public SecondaryEngine secondary()
    {
        return secondary;
    }

    /** The QEMU that runs the VM on this host (the primary's, or the one a failover resumed), else null. */
    public QemuProcess qemu()
    {
        return qemu != null ? qemu : failover == null ? null : failover.running();
    }

    /** Primary: the checkpoint source with its per-step timings, else null. */
    public QemuStateSource stateSource()
    {
        return stateSource;
    }

    /** Primary: the output commit of all NICs (empty in a control run), else null. */
    public VmOutputCommit output()
    {
        return output;
    }

    /**
     * At stop, a NIC's plumbing is removed (its VM tap back on its bridge) only if its output passes: the engine
     * let it pass unprotected with the arbiter's grant, or the VM stops with colod. Output that is held or fenced
     * when colod stops, with the VM left running, stays cut, exactly as a crash leaves it (the next colod adopts the
     * VM and replaces the plumbing), so nothing leaves unacknowledged that the arbiter did not allow.
     */
    private void leaveOrRemove(final String tap, final EpochLedger ledger, final AutoCloseable plumbing) throws Exception
    {
        final QemuProcess q = qemu;
        final boolean vmRunsOn = config.onStop == ColodConfig.OnStop.LEAVE_RUNNING && q != null && q.isAlive();
        if (ledger != null && vmRunsOn && ledger.mode() != FrameLedger.Mode.PASS_THROUGH)
        {
            LOG.warn("vm={} nic={}: colod stops with the VM's output {} (not let out unprotected): its output stays " +
                "cut until the next colod takes the VM over", v.name, tap, ledger.mode().name().toLowerCase());
            return;
        }
        plumbing.close();
    }

    /** Where the secondary keeps {@code v}'s standby image (and a failover runs the VM's RAM from). */
    private static Path imageDir(final ColodConfig config, final ColodConfig.Vm v)
    {
        return Path.of(config.ramDir).resolve(v.name + "-image");
    }

    /**
     * Where colod starts the VM's QEMU on a RAM file of its own: ram-dir (4 KiB pages) or, with {@code ram-page-size:
     * 2m}, hugepage-dir. A VM that took over here runs on the standby image's RAM (4 KiB) until it is restarted.
     */
    static Path ramFile(final ColodConfig config, final ColodConfig.Vm v)
    {
        return ramFileIn(v.ramPageSize == ColodConfig.RamPageSize.PAGE_2M ? config.hugepageDir : config.ramDir, v);
    }

    /** The VM's RAM file in {@code dir} (ram-dir or hugepage-dir), whatever the configured page size. */
    private static Path ramFileIn(final String dir, final ColodConfig.Vm v)
    {
        return Path.of(dir).resolve(v.name + ".ram");
    }

    /** Secondary: the failover launcher, else null. */
    public QemuFailover failover()
    {
        return failover;
    }

    /** Stops the role switch first (a failover's re-protection in progress completes), then undoes everything. */
    @Override
    public void close()
    {
        roleSwitch.shutdown();
        try
        {
            if (!roleSwitch.awaitTermination(30, TimeUnit.SECONDS))
            {
                LOG.warn("vm={} the role switch did not finish within 30 s; stopping anyway", name);
            }
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
        closers.close();
    }
}
