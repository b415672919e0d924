package dev.colod.agent.vm;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.buffer.hybrid.TcpRewriter;
import dev.colod.os.IpRoute;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Failover: start QEMU on the committed image (its RAM file, shared), load the committed device state with
 * {@code migrate-incoming} (x-ignore-shared), {@code cont}, and {@code announce-self} so switches learn where
 * the guest's MAC lives now. The guest keeps its MAC and IP.
 */
public final class QemuFailover implements StandbyImage.Activation, AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(QemuFailover.class);

    private final VmSpec spec;
    private final Path runDir;
    private final String netns;
    private final boolean hot;
    private final ExecutorService starter;
    private volatile QemuProcess running;
    private volatile boolean trackWrites;
    private volatile Future<QemuProcess> standby;
    private volatile QemuProcess.Incoming standbyForm;
    /** Hybrid mode: the copy of the VM that runs here between checkpoints, or null. */
    private volatile RunningCopy copy;
    private volatile List<String> runningTaps;
    /** Whether the last failover continued hybrid mode's running copy (true even after it moved to shared RAM). */
    private volatile boolean continuedCopy;
    /** Whether the continued copy then moved into a QEMU on a shared RAM file ({@link #moveToSharedRam}). */
    private volatile boolean movedToSharedRam;
    private volatile List<String> bridges = List.of();
    private volatile boolean continueCopy = true;
    private volatile TcpRewriter rewriter;
    public volatile long lastStartMicros;
    public volatile long lastLoadMicros;
    /** The checkpoint the last failover resumed (or continued the copy of), 0 before any. */
    public volatile long lastActivated;

    /**
     * {@code hot}: pre-start QEMU paused ({@code -incoming defer}) on the committed RAM file once the first
     * checkpoint is loaded, on a thread of its own (the session never waits for it), so failover is only the
     * device-state load and {@code cont}. Its RAM mapping is shared with the image, so later commits are seen by
     * it without any copy.
     */
    public QemuFailover(final VmSpec spec, final Path runDir, final String netns, final boolean hot)
    {
        this.spec = spec;
        this.runDir = runDir;
        this.netns = netns;
        this.hot = hot;
        this.starter = Executors.newSingleThreadExecutor(r ->
        {
            final Thread t = new Thread(r, "colod-" + spec.name() + "-hot-standby");
            t.setDaemon(true);
            return t;
        });
    }

    public QemuFailover(final VmSpec spec, final Path runDir, final String netns)
    {
        this(spec, runDir, netns, false);
    }

    /** Hybrid mode: a copy of the VM runs here between checkpoints, following the committed image. */
    public QemuFailover runningCopy(final RunningCopy c)
    {
        copy = c;
        return this;
    }

    /** Hybrid mode: the running copy, else null. */
    public RunningCopy runningCopy()
    {
        return copy;
    }

    /** Ends the running copy (hybrid mode), if there is one; it does not come back. */
    private void closeCopy()
    {
        final RunningCopy c = copy;
        copy = null;
        if (c != null)
        {
            c.close();
        }
    }

    @Override
    public void suspendRunning(final StandbyImage image, final long checkpointId) throws IOException
    {
        final RunningCopy c = copy;
        if (c != null)
        {
            c.pause();
        }
    }

    /** The copy runs from the checkpoint just committed; a live base is no state to run, so it waits for the next. */
    @Override
    public void resumeRunning(final StandbyImage image, final long checkpointId) throws IOException
    {
        final RunningCopy c = copy;
        if (c != null && image.resumable())
        {
            c.commit(checkpointId);
            c.resume(checkpointId);
        }
    }

    @Override
    public void loaded(final StandbyImage image, final long checkpointId)
    {
        final RunningCopy c = copy;
        if (c != null)
        {
            c.prepare(); // the next copy starts now, in the background, so the resume after this is only a load
        }
        if (!hot || running != null || standby != null)
        {
            return;
        }
        standby = starter.submit(() ->
        {
            try
            {
                // before the first regular checkpoint (a live base) there is no device state yet: expect what
                // this build's primaries send
                final QemuProcess.Incoming form = Files.exists(image.deviceStateFile())
                    ? QemuProcess.Incoming.of(image.deviceStateFile()) : QemuProcess.Incoming.DEVICE_STATE;
                final QemuProcess q = QemuProcess.start(spec, runDir, image.ramFile(), form, netns, env(image));
                standbyForm = form;
                LOG.info("vm={} hot standby: QEMU pid {} waits paused on the committed image", spec.name(), q.pid());
                return q;
            }
            catch (final IOException ex)
            {
                LOG.error("vm={} hot standby could not start (failover will cold-start): {}", spec.name(), ex.getMessage());
                return null;
            }
        });
    }

    /** The pre-started standby QEMU if it is up (waiting for a start in progress), else null. */
    private QemuProcess standbyQemu()
    {
        final Future<QemuProcess> f = standby;
        if (f == null)
        {
            return null;
        }
        try
        {
            final QemuProcess q = f.get(QemuProcess.QMP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            return q != null && q.isAlive() ? q : null;
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            return null;
        }
        catch (final ExecutionException | TimeoutException ex)
        {
            LOG.error("vm={} hot standby not ready: {}", spec.name(), ex.toString());
            return null;
        }
    }

    /** The failover QEMU gets the write-tracking library too: it may become the primary that is protected next. */
    private Map<String, String> env(final StandbyImage image) throws IOException
    {
        return trackWrites ? WriteTrackingPreload.environment(runDir, image.ramFile()) : Map.of();
    }

    /** Start failover QEMUs with the write-tracking library (for kernel tracking once this host is primary). */
    public QemuFailover trackWrites(final boolean on)
    {
        trackWrites = on;
        return this;
    }

    /** Stops a hot-standby QEMU that was never activated. */
    @Override
    public void close()
    {
        closeCopy();
        starter.shutdown();
        final QemuProcess s = standbyQemu();
        if (s != null && running != s)
        {
            s.kill();
        }
    }

    /**
     * Hybrid mode: the running copy becomes the VM. It holds the last committed checkpoint and ran on from it with the
     * same input as the primary; every frame a client saw was either covered by that checkpoint or sent by this copy
     * too (matched), so its state, not the image's, is what clients saw (docs/ARCHITECTURE.md, "Hybrid mode").
     */
    private void continueCopy(final RunningCopy.TakenOver t, final long checkpointId) throws IOException
    {
        final long t0 = System.nanoTime();
        final QemuProcess q = t.qemu();
        closeCopy(); // the next copy and the agent taps; the running one was handed over
        final QemuProcess pre = standbyQemu();
        if (pre != null)
        {
            pre.kill();
        }
        try
        {
            // its taps leave the agent (whose taps are gone) for the VM's bridges; output commit, if this host protects
            // the VM again, steers them through new agent taps right after
            final IpRoute net = new IpRoute(netns);
            for (int i = 0; i < t.taps().size() && i < bridges.size(); i++)
            {
                net.tcQuiet("qdisc", "del", "dev", t.taps().get(i), "ingress");
                net.ip("link", "set", "dev", t.taps().get(i), "master", bridges.get(i), "up");
            }
            for (int d = 0; d < spec.disks().size(); d++)
            {
                commitOverlay(q, d, checkpointId);
            }
            q.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS); // paused if a checkpoint was under way
            q.qmp().execute("announce-self", Map.of("initial", 50, "max", 550, "rounds", 5, "step", 100),
                QemuProcess.QMP_TIMEOUT_MS);
        }
        catch (final IOException ex)
        {
            q.kill();
            throw new IOException("vm " + spec.name() + ": the running copy could not take over from checkpoint " +
                checkpointId + ": " + ex.getMessage() + QemuProcess.said(q.runDir()), ex);
        }
        lastStartMicros = 0;
        lastLoadMicros = (System.nanoTime() - t0) / 1000;
        runningTaps = t.taps();
        rewriter = t.rewriter();
        continuedCopy = true;
        running = q;
        LOG.warn("vm={} the running copy (QEMU pid {}, taps {}) runs the VM: it holds checkpoint {} and ran on from it " +
            "with the primary's input; took {} ms", spec.name(), q.pid(), t.taps(), checkpointId, lastLoadMicros / 1000);
    }

    /**
     * The copy's disk {@code d} is an overlay on the committed image: merge what it wrote into the image and make the
     * image its disk again (an active {@code block-commit}, then {@code job-complete}), so that the VM runs on the
     * VM's own disk and node {@link VmSpec#diskNode}, as after any other failover (disk replication starts from it).
     */
    private void commitOverlay(final QemuProcess q, final int d, final long checkpointId) throws IOException
    {
        final String job = "colod-takeover" + d;
        q.qmp().execute("block-commit", Map.of("job-id", job, "device", QemuProcess.overlayNode(d)),
            QemuProcess.QMP_TIMEOUT_MS);
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        boolean completing = false;
        while (true)
        {
            String status = null;
            for (final com.fasterxml.jackson.databind.JsonNode j :
                q.qmp().execute("query-block-jobs", null, QemuProcess.QMP_TIMEOUT_MS))
            {
                if (job.equals(j.path("device").asText()) || job.equals(j.path("id").asText()))
                {
                    status = j.path("status").asText();
                }
            }
            if (status == null)
            {
                if (!completing)
                {
                    throw new IOException("the commit of the running copy's disk overlay ended before it was ready");
                }
                break; // completed and dismissed: the image is the disk
            }
            if ("ready".equals(status) && !completing)
            {
                q.qmp().execute("job-complete", Map.of("id", job), QemuProcess.QMP_TIMEOUT_MS);
                completing = true;
            }
            if (System.nanoTime() - deadline > 0)
            {
                throw new IOException("the commit of the running copy's disk overlay did not finish within 60 s (" +
                    status + ")");
            }
            try
            {
                Thread.sleep(5);
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted committing the running copy's disk overlay", ex);
            }
        }
        LOG.info("vm={} the running copy's disk writes since checkpoint {} are in {} now", spec.name(), checkpointId,
            spec.disks().get(d).image());
    }

    /** The QEMU that runs the VM after failover, or null. */
    public QemuProcess running()
    {
        return running;
    }

    /**
     * Hybrid mode: whether a failover continues the running copy (true, the only sound choice once frames left by
     * comparison) or resumes the committed image; false only for control runs that show why.
     */
    public QemuFailover continueRunningCopy(final boolean on)
    {
        continueCopy = on;
        return this;
    }

    /** The bridge of each NIC: where a running copy's tap goes when it takes over. */
    public QemuFailover bridges(final List<String> b)
    {
        bridges = List.copyOf(b);
        return this;
    }

    /**
     * Hybrid mode, after the running copy took over: it maps its RAM privately from the standby image (share=off),
     * which colod cannot read to checkpoint it, so before the VM is protected again it moves, by a local live
     * migration over a unix socket (every page: the copy's RAM is not a shared file), into a new QEMU whose RAM is
     * {@code ramFile} mapped shared, on the VM's configured taps, with {@code env} (write tracking's preload). The
     * guest runs on during the copy and pauses only for the last round; frames in flight at the switch are lost
     * (TCP resends them). The sequence rewriter stays: the guest's connections are the same. Returns the QEMU that
     * runs the VM now (the running one, unchanged, if its RAM is shared already); on failure the copy runs on,
     * unprotected, and this throws.
     */
    public QemuProcess moveToSharedRam(final Path ramFile, final Map<String, String> env) throws IOException
    {
        final QemuProcess src = running;
        if (src == null || src.sharedRam())
        {
            return src;
        }
        final long t0 = System.nanoTime();
        final Path sock = runDir.resolve("move.sock");
        Files.deleteIfExists(sock);
        // DEVICE_STATE: as the copy, without a configuration section (migration.send-configuration=off on both)
        final QemuProcess dst = QemuProcess.start(spec, runDir, ramFile, QemuProcess.Incoming.DEVICE_STATE, netns, env);
        try
        {
            final Map<String, Object> wholeRam = Map.of("capabilities",
                List.of(Map.of("capability", "x-ignore-shared", "state", false)));
            src.qmp().execute("migrate-set-capabilities", wholeRam, QemuProcess.QMP_TIMEOUT_MS);
            dst.qmp().execute("migrate-set-capabilities", wholeRam, QemuProcess.QMP_TIMEOUT_MS);
            dst.qmp().execute("migrate-incoming", Map.of("uri", "unix:" + sock), QemuProcess.QMP_TIMEOUT_MS);
            src.qmp().execute("migrate", Map.of("uri", "unix:" + sock), QemuProcess.QMP_TIMEOUT_MS);
            final long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(10);
            String status = "";
            while (!"completed".equals(status))
            {
                status = src.qmp().execute("query-migrate", null, QemuProcess.QMP_TIMEOUT_MS).path("status").asText();
                if ("failed".equals(status) || "cancelled".equals(status) || System.nanoTime() - deadline > 0)
                {
                    throw new IOException("the local migration ended " + status);
                }
                Thread.sleep(20);
            }
            if (!"running".equals(dst.qmp().execute("query-status", null, QemuProcess.QMP_TIMEOUT_MS).path("status").asText()))
            {
                dst.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
            }
            dst.qmp().execute("announce-self", Map.of("initial", 50, "max", 550, "rounds", 5, "step", 100),
                QemuProcess.QMP_TIMEOUT_MS);
        }
        catch (final IOException | InterruptedException ex)
        {
            dst.kill();
            if (ex instanceof InterruptedException)
            {
                Thread.currentThread().interrupt();
            }
            try
            {
                src.qmp().execute("migrate_cancel", null, QemuProcess.QMP_TIMEOUT_MS);
                if (!"running".equals(src.qmp().execute("query-status", null, QemuProcess.QMP_TIMEOUT_MS).path("status").asText()))
                {
                    src.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
                }
            }
            catch (final IOException ignored)
            {
                // reported below
            }
            throw new IOException("vm " + spec.name() + ": moving the running copy (QEMU pid " + src.pid() + ") to a " +
                "shared RAM file failed: " + ex.getMessage() + QemuProcess.said(dst.runDir()), ex);
        }
        src.kill();
        running = dst;
        runningTaps = null;
        movedToSharedRam = true;
        LOG.warn("vm={} the running copy moved into QEMU pid {} (RAM {} shared, taps {}) in {} ms: it can be protected " +
            "again", spec.name(), dst.pid(), ramFile, spec.nics().stream().map(VmSpec.Nic::tap).toList(),
            (System.nanoTime() - t0) / 1_000_000);
        return dst;
    }

    /** Whether the last failover continued hybrid mode's running copy (rather than resuming the image). */
    public boolean continuedCopy()
    {
        return continuedCopy;
    }

    /** Whether the continued copy moved into a QEMU on a shared RAM file since (to be protected again). */
    public boolean movedToSharedRam()
    {
        return movedToSharedRam;
    }

    /** The taps of the VM's NICs after failover: the running copy's if it took over, else null (the configured ones). */
    public List<String> runningTaps()
    {
        return runningTaps;
    }

    /** Hybrid mode after the running copy took over: its sequence rewriter, still needed in the data path; else null. */
    public TcpRewriter rewriter()
    {
        return rewriter;
    }

    @Override
    public void activate(final StandbyImage image, final long checkpointId) throws IOException
    {
        lastActivated = checkpointId;
        final RunningCopy c = copy;
        final RunningCopy.TakenOver t = c == null || !continueCopy ? null : c.takeOver(checkpointId);
        if (t != null)
        {
            continueCopy(t, checkpointId);
            return;
        }
        closeCopy();
        final long t0 = System.nanoTime();
        final QemuProcess.Incoming form = QemuProcess.Incoming.of(image.deviceStateFile());
        QemuProcess pre = standbyQemu();
        if (pre != null && standbyForm != form)
        {
            // the primary changed how it saves device state (an upgrade) after the standby QEMU started
            LOG.warn("vm={} hot standby waits for {} but checkpoint {} holds {}: starting a fresh QEMU", spec.name(),
                standbyForm, checkpointId, form);
            pre.kill();
            pre = null;
        }
        final QemuProcess q = pre != null ? pre : QemuProcess.start(spec, runDir, image.ramFile(), form, netns, env(image));
        final long t1 = System.nanoTime();
        try
        {
            q.qmp().execute("migrate-incoming", Map.of("uri", "exec:cat " + image.deviceStateFile()),
                QemuProcess.QMP_TIMEOUT_MS);
            final String status = q.awaitMigration();
            if (!"completed".equals(status))
            {
                throw new IOException("loading device state of checkpoint " + checkpointId + " ended " + status);
            }
            q.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
            q.qmp().execute("announce-self", Map.of("initial", 50, "max", 550, "rounds", 5, "step", 100),
                QemuProcess.QMP_TIMEOUT_MS);
        }
        catch (final IOException | InterruptedException ex)
        {
            q.kill();
            throw new IOException("vm " + spec.name() + ": resuming checkpoint " + checkpointId + " failed: " +
                ex.getMessage() + QemuProcess.said(q.runDir()), ex);
        }
        lastStartMicros = (t1 - t0) / 1000;
        lastLoadMicros = (System.nanoTime() - t1) / 1000;
        running = q;
        LOG.warn("vm={} resumed from checkpoint {} ({}): QEMU start {} ms, device-state load and cont {} ms", spec.name(),
            checkpointId, q == pre ? "hot standby" : "cold start", lastStartMicros / 1000, lastLoadMicros / 1000);
    }
}
