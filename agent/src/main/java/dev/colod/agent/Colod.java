package dev.colod.agent;

import dev.colod.agent.config.ColodConfig;
import dev.colod.agent.config.ConfigException;
import dev.colod.agent.config.ConfigLoader;
import dev.colod.agent.control.ControlServer;
import dev.colod.agent.control.VmHandle;
import dev.colod.agent.qemu.Leftovers;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.agent.vm.QemuFailover;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.agent.vm.StandbyImage;
import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.NicStats;
import dev.colod.buffer.OutputCommitNic;
import dev.colod.buffer.TapNic;
import dev.colod.netfilter.NfqueueNic;
import dev.colod.netfilter.NfqueueRules;
import dev.colod.buffer.NicOutputCommit;
import dev.colod.buffer.net.NicPlumbing;
import dev.colod.core.ColoConfig;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.status.ColoCounters;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * The colod daemon: {@code colod --config /etc/colod/colod.yaml}. Runs every VM of the file in its role on this
 * host, serves the control socket, and on SIGTERM stops cleanly (held frames released, the host's network as
 * it found it, the VM left running unprotected or stopped as configured).
 * Exit codes: 0 clean stop, 2 usage, 4 invalid configuration, 1 start-up failed.
 */
public final class Colod implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(Colod.class);

    private final ColodConfig config;
    private final Closers closers = new Closers(ex -> LOG.warn("stopping: {}", ex.toString()));
    private final List<VmHandle> handles = new ArrayList<>();
    private final MultiThreadIoEventLoopGroup loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());

    Colod(final ColodConfig config)
    {
        this.config = config;
    }

    public static void main(final String[] args) throws Exception
    {
        if (args.length != 2 || !"--config".equals(args[0]))
        {
            System.err.println("usage: colod --config /etc/colod/colod.yaml");
            System.exit(2);
        }
        final ColodConfig cfg;
        try
        {
            cfg = ConfigLoader.load(Path.of(args[1]));
        }
        catch (final ConfigException ex)
        {
            System.err.println("colod: " + ex.getMessage());
            System.exit(4);
            return;
        }
        ((ch.qos.logback.classic.Logger)LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME))
            .setLevel(ch.qos.logback.classic.Level.toLevel(cfg.logLevel));
        final Colod colod = new Colod(cfg);
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() ->
        {
            LOG.info("SIGTERM: stopping");
            colod.close();
            stopped.countDown();
        }, "colod-stop"));
        try
        {
            sun.misc.Signal.handle(new sun.misc.Signal("HUP"), s -> LOG.warn(
                "SIGHUP: nothing in colod.yaml can change at run time in this version; restart colod to apply changes"));
        }
        catch (final IllegalArgumentException ex)
        {
            LOG.warn("cannot handle SIGHUP here: {}", ex.getMessage());
        }
        try
        {
            colod.start();
        }
        catch (final Exception ex)
        {
            LOG.error("start-up failed: {}", ex.getMessage(), ex);
            System.exit(1);
        }
        stopped.await();
    }

    void start() throws Exception
    {
        final Path runtime = Path.of(config.runtimeDir);
        for (final ColodConfig.Vm v : config.vms)
        {
            final Path runDir = runtime.resolve(v.name);
            for (final String left : Leftovers.scan(runDir))
            {
                LOG.warn("vm={} left by an earlier run: {}", v.name, left);
            }
            Leftovers.removeStale(runDir);
            for (final String fixed : NicPlumbing.recover(runDir.resolve("plumbing")))
            {
                LOG.warn("vm={} repaired after an unclean stop: {}", v.name, fixed);
            }
            for (final String fixed : NfqueueRules.recover(runDir.resolve("plumbing")))
            {
                LOG.warn("vm={} repaired after an unclean stop: {}", v.name, fixed);
            }
            final VmSpec spec = new VmSpec(v.name, v.memoryMib, v.vcpus, v.kernel == null ? null : Path.of(v.kernel),
                v.initrd == null ? null : Path.of(v.initrd), v.append,
                v.nics.stream().map(n -> new VmSpec.Nic(n.tap, n.mac)).toList(), v.accel, Path.of(config.ramDir),
                v.extraArgs).check();
            final ColoConfig engine = new ColoConfig().vmName(v.name)
                .mode("strict".equals(v.mode) ? ColoConfig.Mode.STRICT : ColoConfig.Mode.SPECULATIVE)
                .checkpointDelayMs(v.checkpointDelayMs).heartbeatIntervalMs(v.heartbeatIntervalMs)
                .heartbeatTimeoutMs(v.heartbeatTimeoutMs)
                .maxStateBytes(v.maxStateBytes > 0 ? v.maxStateBytes : spec.memoryBytes() + (64L << 20)).conclude();
            final String[] hp = v.peer.split(":");
            final InetSocketAddress peer = new InetSocketAddress(hp[0], Integer.parseInt(hp[1]));
            if ("primary".equals(v.role))
            {
                startPrimary(v, spec, engine, peer, runDir);
            }
            else
            {
                startSecondary(v, spec, engine, peer, runDir);
            }
        }
        closers.add(new ControlServer(runtime.resolve("colod.sock"), handles));
        if (!config.metricsListen.isEmpty())
        {
            final String[] hp = config.metricsListen.split(":");
            closers.add(new dev.colod.agent.control.MetricsServer(
                new InetSocketAddress(hp[0], Integer.parseInt(hp[1])), handles));
        }
    }

    private void startPrimary(final ColodConfig.Vm v, final VmSpec spec, final ColoConfig engine,
        final InetSocketAddress peer, final Path runDir) throws Exception
    {
        final QemuProcess qemu = QemuProcess.start(spec, runDir, Path.of(config.ramDir).resolve(v.name + ".ram"), false, v.netns);
        closers.add(() ->
        {
            if ("stop".equals(config.onStop))
            {
                qemu.close();
            }
        });
        final List<OutputCommitNic> nics = new ArrayList<>();
        final PrimaryEngine[] ref = new PrimaryEngine[1];
        for (final ColodConfig.Nic n : v.nics)
        {
            if ("nfqueue".equals(n.buffer))
            {
                closers.add(NfqueueRules.install(n.tap, n.queueNum, v.name, v.netns, runDir.resolve("plumbing")));
                final NfqueueNic nq = NfqueueNic.open(n.tap, n.queueNum, n.queueMaxLen, n.failOpen, v.netns,
                    (IoEventLoop)loop.next());
                closers.add(nq);
                nics.add(nq);
                continue;
            }
            final NicPlumbing plumbing = NicPlumbing.install(n.tap, n.bridge, v.netns, runDir.resolve("plumbing"));
            closers.add(plumbing);
            final TapNic nic = new TapNic(n.tap, plumbing.guestTap(), plumbing.uplinkTap(), (IoEventLoop)loop.next(),
                new BufferLimits().maxFrames(n.maxFrames).maxBytes(n.maxBytes).highWaterPercent(n.highWaterPercent)
                    .policy("drop".equals(n.policy) ? BufferLimits.Policy.DROP : BufferLimits.Policy.BACKPRESSURE).conclude(),
                () ->
                {
                    if (ref[0] != null)
                    {
                        ref[0].requestCheckpoint();
                    }
                }).start();
            closers.add(nic);
            nics.add(nic);
        }
        final NicOutputCommit output = new NicOutputCommit(v.name, nics);
        final PrimaryEngine e = new PrimaryEngine(engine, peer, new QemuStateSource(qemu), output, new ColoCounters(),
            ProtocolTap.NONE, NanoClock.SYSTEM);
        ref[0] = e;
        e.start();
        closers.add(e); // closed first: releases held frames, leaves the VM running
        handles.add(VmHandle.primary(v.name, e, () ->
        {
            final List<NicStats> s = new ArrayList<>();
            nics.forEach(n -> s.add(n.stats()));
            return s;
        }));
    }

    private void startSecondary(final ColodConfig.Vm v, final VmSpec spec, final ColoConfig engine,
        final InetSocketAddress listen, final Path runDir) throws Exception
    {
        final QemuFailover failover = new QemuFailover(spec, runDir, v.netns, "hot".equals(v.standby));
        closers.add(failover);
        final StandbyImage image = new StandbyImage(Path.of(config.ramDir).resolve(v.name + "-image"), v.name, failover);
        final SecondaryEngine e = new SecondaryEngine(engine, listen, image, new ColoCounters(), ProtocolTap.NONE,
            NanoClock.SYSTEM).start();
        closers.add(e);
        handles.add(VmHandle.secondary(v.name, e));
    }

    @Override
    public void close()
    {
        closers.close();
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }
}
