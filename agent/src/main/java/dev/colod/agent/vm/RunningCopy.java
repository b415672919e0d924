package dev.colod.agent.vm;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.buffer.hybrid.CopyMirror;
import dev.colod.buffer.hybrid.CopyTap;
import dev.colod.core.Closeables;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The secondary's running copy of the VM in hybrid mode (docs/ARCHITECTURE.md, "Hybrid mode"): a QEMU whose RAM
 * is a private mapping ({@code share=off}) of the committed RAM image, so the image never sees what the copy's
 * guest writes. QEMU 7.2 takes a device state only once ({@code xen-load-devices-state} aborts it), so every
 * checkpoint gets a fresh copy: the next one waits, started and paused ({@code -incoming defer}), on the image;
 * at {@link #commit} it takes the checkpoint's device state and the one before is killed, its writes with it.
 * The copies' NICs use taps of their own ({@link #tapOf}), never the VM's: nothing the copy sends reaches a
 * network. With a {@link CopyMirror} each copy tap is wired to an agent tap ({@link CopyTap}, one per tap name,
 * kept while copies come and go) through which the mirror injects the primary's inbound frames and reads what the
 * copy's guest sends. Each disk of the VM is a throwaway qcow2 overlay per copy on its committed image ({@link #overlay}).
 * <p>
 * Threads: the caller's (the session's) for {@link #commit}, {@link #pause} and {@link #resume}; one starter
 * thread of its own for pre-starting the next copy, outside the pause.
 */
public final class RunningCopy implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(RunningCopy.class);
    private static final long START_TIMEOUT_MS = 60_000;

    private final VmSpec spec;
    private final Path runDir;
    private final String netns;
    private final Path imageRam;
    private final Path deviceState;
    private final ExecutorService starter;
    private final CopyMirror mirror;
    /** Agent taps by copy parity (0: "-a", 1: "-b"), one per NIC; opened on first use. Guarded by itself. */
    private final List<List<CopyTap>> agentTaps = new ArrayList<>(List.of(new ArrayList<>(), new ArrayList<>()));
    private Future<QemuProcess> next;
    private QemuProcess running;
    private long runningGeneration;
    /** The checkpoint the running copy was loaded from; -1 before the first. */
    private long runningCheckpoint = -1;
    private long generation;
    private long nextGeneration;
    private volatile long lastLoadMicros;

    /**
     * A running copy of {@code spec} on the image whose RAM file is {@code imageRam} and whose committed device
     * state is {@code deviceState}; each copy gets a directory under {@code runDir}.
     */
    public RunningCopy(final VmSpec spec, final Path runDir, final String netns, final Path imageRam,
        final Path deviceState)
    {
        this(spec, runDir, netns, imageRam, deviceState, null);
    }

    /** As above; {@code mirror} (null: none) gets each copy's frames. */
    public RunningCopy(final VmSpec spec, final Path runDir, final String netns, final Path imageRam,
        final Path deviceState, final CopyMirror mirror)
    {
        this.spec = spec;
        this.runDir = runDir;
        this.netns = netns;
        this.imageRam = imageRam;
        this.deviceState = deviceState;
        this.mirror = mirror;
        this.starter = Executors.newSingleThreadExecutor(r ->
        {
            final Thread t = new Thread(r, "colod-" + spec.name() + "-copy-starter");
            t.setDaemon(true);
            return t;
        });
    }

    /** The tap of a copy's NIC: the VM's tap name with the copy's parity, at most 15 characters. */
    public static String tapOf(final String vmTap, final long generation)
    {
        final String suffix = generation % 2 == 0 ? "-a" : "-b";
        return (vmTap.length() + 2 <= 15 ? vmTap : vmTap.substring(0, 13)) + suffix;
    }

    /** Starts the next copy in the background (paused, waiting for a device state), unless one is on its way. */
    public synchronized void prepare()
    {
        if (next == null)
        {
            final long g = ++generation;
            nextGeneration = g;
            next = starter.submit(() -> start(g));
        }
    }

    private QemuProcess start(final long g) throws IOException
    {
        final List<VmSpec.Nic> nics = new ArrayList<>();
        for (final VmSpec.Nic n : spec.nics())
        {
            nics.add(new VmSpec.Nic(tapOf(n.tap(), g), n.mac(), n.plainFrames()));
        }
        // -S: after the device state is loaded the copy stays paused until the protocol resumes it
        final List<String> args = new ArrayList<>(spec.extraArgs());
        args.add("-S");
        final VmSpec copy = new VmSpec(spec.name(), spec.memoryMiB(), spec.vcpus(), spec.kernel(), spec.initrd(),
            spec.append(), nics, spec.accel(), spec.ramDir(), args, spec.disks(), spec.firmwareCode());
        final Path dir = runDir.resolve("copy-" + (g % 2 == 0 ? "a" : "b"));
        final List<Path> overlays = new ArrayList<>();
        for (int d = 0; d < spec.disks().size(); d++)
        {
            overlays.add(overlay(dir, d));
        }
        final QemuProcess q = QemuProcess.start(copy, dir, imageRam, QemuProcess.Incoming.DEVICE_STATE, netns, Map.of(),
            false, overlays);
        if (mirror != null)
        {
            try
            {
                final List<CopyTap> taps = agentTaps(g);
                for (int i = 0; i < nics.size(); i++)
                {
                    taps.get(i).wire(nics.get(i).tap());
                }
            }
            catch (final IOException | RuntimeException ex)
            {
                q.kill();
                throw ex;
            }
        }
        return q;
    }

    /**
     * A new, empty qcow2 overlay in {@code dir} on the VM's committed disk {@code d} (raw: hybrid mode refuses qcow2
     * disks): the copy's writes go there and die with it; what it reads and did not write comes from the committed
     * image as it is at the time of the read.
     */
    private Path overlay(final Path dir, final int d) throws IOException
    {
        Files.createDirectories(dir);
        final Path overlay = dir.resolve(d == 0 ? "disk.qcow2" : "disk" + d + ".qcow2");
        Files.deleteIfExists(overlay);
        final Path image = spec.disks().get(d).image();
        // -u: the backing file is not opened (the size is given), so nothing waits for another opener's lock
        final Process p = new ProcessBuilder("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b",
            image.toString(), overlay.toString(), Long.toString(Files.size(image)))
            .redirectErrorStream(true).start();
        try
        {
            final String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            if (p.waitFor() != 0)
            {
                throw new IOException("qemu-img create of the running copy's disk overlay " + overlay + " failed: " +
                    out.strip());
            }
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            p.destroyForcibly();
            throw new IOException("interrupted creating " + overlay, ex);
        }
        return overlay;
    }

    /** The agent taps of the copies of parity {@code g % 2}, one per NIC, opened the first time. */
    private List<CopyTap> agentTaps(final long g) throws IOException
    {
        synchronized (agentTaps)
        {
            final List<CopyTap> taps = agentTaps.get((int)(g % 2));
            while (taps.size() < spec.nics().size())
            {
                taps.add(CopyTap.open(tapOf(spec.nics().get(taps.size()).tap(), g), netns));
            }
            return List.copyOf(taps);
        }
    }

    /**
     * The image holds checkpoint {@code checkpointId} now (RAM and device state committed): the prepared copy takes
     * its device state and waits, paused, for {@link #resume}; the copy before it is killed. Returns the load's
     * microseconds.
     */
    public synchronized long commit(final long checkpointId) throws IOException
    {
        prepare();
        final QemuProcess q;
        try
        {
            q = next.get(START_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IOException("vm " + spec.name() + ": interrupted waiting for the next running copy", ex);
        }
        catch (final ExecutionException | TimeoutException ex)
        {
            next = null;
            throw new IOException("vm " + spec.name() + ": the next running copy did not start: " +
                (ex.getCause() == null ? ex : ex.getCause()).getMessage(), ex);
        }
        next = null;
        final long g = nextGeneration;
        final QemuProcess old = running;
        running = null;
        if (old != null)
        {
            old.kill(); // its writes go with it; the image never had them
        }
        final long t0 = System.nanoTime();
        try
        {
            q.qmp().execute("migrate-incoming", Map.of("uri", "exec:cat " + deviceState), QemuProcess.QMP_TIMEOUT_MS);
            final String status = q.awaitMigration();
            if (!"completed".equals(status))
            {
                throw new IOException("loading the device state of checkpoint " + checkpointId + " ended " + status);
            }
        }
        catch (final IOException | InterruptedException ex)
        {
            q.kill();
            throw new IOException("vm " + spec.name() + ": the running copy could not take checkpoint " + checkpointId +
                ": " + ex.getMessage() + QemuProcess.said(q.runDir()), ex);
        }
        lastLoadMicros = (System.nanoTime() - t0) / 1000;
        running = q;
        runningGeneration = g;
        runningCheckpoint = checkpointId;
        LOG.debug("vm={} running copy {} holds checkpoint {} (loaded in {} us)", spec.name(), q.pid(), checkpointId,
            lastLoadMicros);
        prepare();
        return lastLoadMicros;
    }

    /** Pauses the running copy (at {@code checkpoint-request}). */
    public synchronized void pause() throws IOException
    {
        if (mirror != null)
        {
            mirror.suspending();
        }
        if (running != null)
        {
            running.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
        }
    }

    /** Resumes the running copy (after {@code vmstate-loaded}), which holds checkpoint {@code checkpointId}. */
    public synchronized void resume(final long checkpointId) throws IOException
    {
        if (running != null)
        {
            if (mirror != null)
            {
                mirror.resuming(checkpointId, agentTaps(runningGeneration));
            }
            running.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        }
    }

    /** What a failover takes over: the copy's QEMU, its NICs' taps, and its sequence rewriter (null: none). */
    public record TakenOver(QemuProcess qemu, List<String> taps, dev.colod.buffer.hybrid.TcpRewriter rewriter)
    {
    }

    /**
     * Failover: hands the running copy over to run the VM, if it was loaded from checkpoint {@code committed} (the
     * last one committed) and is alive; else null (the committed image must be resumed instead: the copy is gone,
     * or behind the image, whose newer checkpoint clients may have seen). The frames channel stops reading its
     * taps; everything else of this object is left for {@link #close} (the next copy, the agent taps).
     */
    public synchronized TakenOver takeOver(final long committed)
    {
        final QemuProcess q = running;
        if (q == null || !q.isAlive() || runningCheckpoint != committed)
        {
            LOG.warn("vm={} the running copy {} checkpoint {} (committed: {}): it cannot take over", spec.name(),
                q == null ? "does not exist, last" : q.isAlive() ? "holds" : "died, held", runningCheckpoint, committed);
            return null;
        }
        if (mirror != null)
        {
            mirror.stopped();
        }
        running = null;
        final List<String> taps = new ArrayList<>();
        for (final VmSpec.Nic n : spec.nics())
        {
            taps.add(tapOf(n.tap(), runningGeneration));
        }
        return new TakenOver(q, taps, mirror == null ? null : mirror.rewriter());
    }

    /** The copy that holds the last committed checkpoint, or null before the first commit. */
    public synchronized QemuProcess running()
    {
        return running;
    }

    /** The checkpoint the running copy holds (it ran on from there), or -1. */
    public synchronized long runningCheckpoint()
    {
        return runningCheckpoint;
    }

    /** How long the last commit's device-state load took, microseconds. */
    public long lastLoadMicros()
    {
        return lastLoadMicros;
    }

    @Override
    public synchronized void close()
    {
        if (mirror != null)
        {
            mirror.stopped(); // no tap is read after this
        }
        starter.shutdown(); // a start in progress completes, so its QEMU is known and killed below
        if (running != null)
        {
            running.kill();
            running = null;
        }
        if (next != null)
        {
            try
            {
                next.get(START_TIMEOUT_MS, TimeUnit.MILLISECONDS).kill();
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
            }
            catch (final ExecutionException | TimeoutException | CancellationException ex)
            {
                // it never started, or is not worth waiting for
            }
            next = null;
        }
        synchronized (agentTaps)
        {
            agentTaps.forEach(l -> l.forEach(Closeables::closeQuietly));
            agentTaps.forEach(List::clear);
        }
    }
}
