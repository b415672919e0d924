package dev.colod.agent;

import dev.colod.agent.config.ColodConfig;
import dev.colod.agent.config.ConfigException;
import dev.colod.agent.config.ConfigLoader;
import dev.colod.agent.control.Coloctl;
import dev.colod.agent.control.ControlServer;
import dev.colod.agent.control.Maintenance;
import dev.colod.agent.control.MetricsServer;
import dev.colod.agent.control.VmHandle;
import dev.colod.agent.qemu.QemuProcess;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
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
    private static final String USAGE = String.join("\n",
        "usage: colod --config /etc/colod/colod.yaml   run every VM of the file in its role on this host",
        "       colod --version | --help",
        "Inspect and command it with coloctl (coloctl --help); check a file first: coloctl config check --host FILE.",
        "Exit codes: 0 clean stop, 1 start-up failed, 2 usage, 4 invalid configuration.");

    private final ColodConfig config;
    private final Closers closers = new Closers(ex -> LOG.warn("stopping: {}", ex.toString()));
    private final List<VmHandle> handles = new ArrayList<>();
    /** Each VM's side on this host, in config order; replaced when a fenced host stands by ({@link #standBy}). */
    private final List<ProtectedVm> vms = new ArrayList<>();
    private final MultiThreadIoEventLoopGroup loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());

    Colod(final ColodConfig config)
    {
        this.config = config;
    }

    public static void main(final String[] args) throws Exception
    {
        if (args.length == 1 && ("--version".equals(args[0]) || "-V".equals(args[0])))
        {
            System.out.println("colod " + Coloctl.version());
            return;
        }
        if (args.length == 1 && ("--help".equals(args[0]) || "-h".equals(args[0])))
        {
            System.out.println(USAGE);
            return;
        }
        if (args.length != 2 || !"--config".equals(args[0]))
        {
            System.err.println(USAGE);
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
            .setLevel(ch.qos.logback.classic.Level.toLevel(cfg.logLevel.name()));
        final Colod colod = new Colod(cfg);
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() ->
        {
            LOG.info("SIGTERM: stopping");
            SdNotify.notify("STOPPING=1");
            colod.close();
            stopped.countDown();
        }, "colod-stop"));
        try
        {
            final Path file = Path.of(args[1]);
            sun.misc.Signal.handle(new sun.misc.Signal("HUP"), s -> reload(file));
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
        SdNotify.notify("READY=1\nSTATUS=" + cfg.vms.size() + " VM(s) set up");
        colod.watchdog();
        stopped.await();
    }

    /**
     * SIGHUP ({@code systemctl reload colod}): reads the file again and applies what is safe to change while VMs
     * run, the log level; a file with errors changes nothing (they are logged, as at start-up); anything else that
     * changed is named, with "restart colod to apply it".
     */
    static void reload(final Path file)
    {
        try
        {
            final ColodConfig next = ConfigLoader.load(file);
            final ch.qos.logback.classic.Logger root =
                (ch.qos.logback.classic.Logger)LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
            final ch.qos.logback.classic.Level level = ch.qos.logback.classic.Level.toLevel(next.logLevel.name());
            if (!level.equals(root.getLevel()))
            {
                root.setLevel(level);
                LOG.warn("SIGHUP: log level now {} (from {})", level, file);
            }
            else
            {
                LOG.warn("SIGHUP: {} read again; the log level is what changes at run time (still {}); other " +
                    "changes, if any, apply when colod restarts", file, level);
            }
        }
        catch (final ConfigException | RuntimeException ex)
        {
            LOG.error("SIGHUP: {} not applied, nothing changed: {}", file, ex.getMessage());
        }
    }

    /**
     * Under a systemd watchdog ({@code WatchdogSec}): says WATCHDOG=1 every half interval, as long as the event loop
     * that carries the VMs' frames runs a task within that half interval; a stuck colod is restarted by systemd.
     */
    void watchdog()
    {
        final long usec = SdNotify.watchdogMicros();
        if (usec <= 0)
        {
            return;
        }
        final long halfMs = Math.max(1, usec / 2000);
        final Thread t = new Thread(() ->
        {
            while (!loop.isShuttingDown())
            {
                try
                {
                    final CountDownLatch alive = new CountDownLatch(1);
                    loop.execute(alive::countDown);
                    if (alive.await(halfMs, java.util.concurrent.TimeUnit.MILLISECONDS))
                    {
                        SdNotify.notify("WATCHDOG=1");
                    }
                    else
                    {
                        LOG.error("the event loop did not run a task within {} ms: not telling the watchdog", halfMs);
                    }
                    Thread.sleep(halfMs);
                }
                catch (final InterruptedException | java.util.concurrent.RejectedExecutionException ex)
                {
                    return;
                }
            }
        }, "colod-watchdog");
        t.setDaemon(true);
        t.start();
        LOG.info("systemd watchdog: every {} ms", halfMs);
    }

    void start() throws Exception
    {
        // before anything is touched: a second colod on this runtime dir would fight the first over the VMs
        closers.add(InstanceLock.acquire(Path.of(config.runtimeDir)));
        for (int i = 0; i < config.vms.size(); i++)
        {
            final int at = i;
            final ProtectedVm vm = ProtectedVm.open(config, config.vms.get(i), loop, ProtectedVm.Hooks.DAEMON);
            vms.add(vm);
            closers.add(() -> closeVm(at));
            vm.protect();
            handles.add(vm.handle().onStandBy(() -> standBy(at)));
        }
        final Maintenance maintenance = new Maintenance(Path.of(config.stateDir));
        if (maintenance.why() != null)
        {
            LOG.warn("{}", maintenance.why());
        }
        closers.add(new ControlServer(Path.of(config.runtimeDir).resolve("colod.sock"), handles, maintenance));
        LOG.info("colod {} started: {} VM(s): {}; arbiter {}; replication {}; control {}{}", Coloctl.version(),
            config.vms.size(), summary(), config.arbiter == null || config.arbiter.none() ? "none (UNARBITRATED)"
                : "etcd " + config.arbiter.etcd, config.insecure ? "plaintext (insecure)" : "mutual TLS 1.3",
            Path.of(config.runtimeDir).resolve("colod.sock"),
            config.metricsListen.isEmpty() ? "" : "; metrics http://" + config.metricsListen + "/metrics");
        if (!config.metricsListen.isEmpty())
        {
            final List<Path> certs = new ArrayList<>();
            if (config.tls != null)
            {
                java.util.stream.Stream.of(config.tls.ca, config.tls.cert).filter(java.util.Objects::nonNull)
                    .forEach(f -> certs.add(Path.of(f)));
            }
            if (config.arbiter != null && config.arbiter.cert != null)
            {
                certs.add(Path.of(config.arbiter.cert));
            }
            closers.add(new MetricsServer(ConfigLoader.socketAddress(config.metricsListen), handles, certs)
                .maintenance(maintenance));
        }
    }

    private synchronized void closeVm(final int at)
    {
        final ProtectedVm vm = vms.set(at, null);
        if (vm != null)
        {
            vm.close();
        }
    }

    /**
     * {@code coloctl standby VM} on a fenced host: what a restart of colod does for this VM, without touching the
     * others: its side here closes (the paused copy is stopped, never resumed) and opens again, finds the fence
     * marker and stands by for the host that runs the VM (the marker is removed then). Only where roles follow
     * the VM ({@code listen}); with fixed roles this host cannot become the VM's secondary.
     */
    private synchronized void standBy(final int at) throws Exception
    {
        final ColodConfig.Vm v = config.vms.get(at);
        if (v.listen == null)
        {
            throw new IllegalStateException("vm " + v.name + " has fixed roles (no listen in " + "colod.yaml): this host " +
                "cannot stand by for it. Stop the copy that runs on " + v.peer + " first, then delete " +
                Path.of(config.stateDir).resolve(v.name).resolve("fenced") + " and restart colod here");
        }
        // a side already closed here is a standby that failed to open after stopping the copy: it may be retried
        if (vms.get(at) != null && !handles.get(at).fenced())
        {
            throw new IllegalStateException(handles.get(at).notFenced());
        }
        LOG.warn("vm={} standby requested on this fenced host: stopping the fenced copy and standing by for {}", v.name,
            v.peer);
        final ProtectedVm fencedSide = vms.get(at);
        final QemuProcess fencedCopy = fencedSide == null ? null : fencedSide.qemu();
        closeVm(at);
        if (fencedCopy != null && fencedCopy.isAlive())
        {
            // stopped here, not adopted by the new side: this process still holds the copy's QMP connection
            // (on-stop: leave keeps QEMU), and QEMU serves one QMP client at a time
            fencedCopy.close();
        }
        final ProtectedVm fresh;
        try
        {
            fresh = ProtectedVm.open(config, v, loop, ProtectedVm.Hooks.DAEMON, handles.get(at));
        }
        catch (final Exception ex)
        {
            LOG.error("vm={} standby: the fenced copy is stopped, but standing by failed: {}", v.name, ex.getMessage());
            throw new IOException("vm " + v.name + ": the fenced copy is stopped, but standing by failed: " +
                ex.getMessage() + "; run coloctl standby again once fixed (or restart colod)", ex);
        }
        vms.set(at, fresh);
        fresh.protect();
        LOG.warn("vm={} stands by now for {} (fence cleared)", v.name, v.peer);
    }

    /** One entry per VM: name, role now, peer, mode, each NIC's backend. */
    private String summary()
    {
        final List<String> vms = new ArrayList<>();
        for (int i = 0; i < config.vms.size(); i++)
        {
            final ColodConfig.Vm v = config.vms.get(i);
            final VmHandle h = handles.get(i);
            vms.add(v.name + " " + h.status().get("role") + " (peer " + v.peer + ", mode " +
                v.engine().mode().name().toLowerCase() + ", nics " + v.nics.stream().map(n -> n.tap + ":" +
                n.buffer.name().toLowerCase()).toList() + ")");
        }
        return String.join(", ", vms);
    }

    @Override
    public void close()
    {
        closers.close();
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }
}
