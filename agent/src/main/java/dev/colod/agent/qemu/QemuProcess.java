package dev.colod.agent.qemu;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * One QEMU process for a {@link VmSpec}: RAM as a shared memory-backend file, QMP socket, pidfile and serial
 * log in the VM's runtime directory. Optionally started inside a network namespace (its taps live there).
 */
public final class QemuProcess implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(QemuProcess.class);
    public static final long QMP_TIMEOUT_MS = 10_000;

    private final VmSpec spec;
    private final Path runDir;
    private final Path ramFile;
    private final ProcessHandle process;
    private final boolean adopted;
    private final QmpClient qmp;
    /** Whether the guest's RAM is the file, mapped shared ({@code share=on}); false for hybrid mode's running copy. */
    private final boolean sharedRam;

    private QemuProcess(final VmSpec spec, final Path runDir, final Path ramFile, final ProcessHandle process,
        final QmpClient qmp, final boolean adopted, final boolean sharedRam)
    {
        this.adopted = adopted;
        this.sharedRam = sharedRam;
        this.spec = spec;
        this.runDir = runDir;
        this.ramFile = ramFile;
        this.process = process;
        this.qmp = qmp;
    }

    /**
     * Whether the guest's RAM is {@link #ramFile()} mapped shared: what colod reads to checkpoint it. False for a
     * hybrid-mode running copy (its file is the committed image, mapped privately).
     */
    public boolean sharedRam()
    {
        return sharedRam;
    }

    public static Path qmpSocket(final Path runDir)
    {
        return runDir.resolve("qmp.sock");
    }

    /** Whether a QEMU boots its guest or waits for a checkpoint's device state, and in which form that comes. */
    public enum Incoming
    {
        /** Boots the guest. */
        NONE,
        /** Waits ({@code -incoming defer}) for a whole migration stream: a configuration section, then devices. */
        MIGRATION_STREAM,
        /**
         * Waits for what {@code xen-save-devices-state} writes: the devices alone, no configuration section
         * ({@code migration.send-configuration=off}) and no JSON description ({@code suppress-vmdesc}).
         */
        DEVICE_STATE;

        /** QEMU's save-file magic ("QEVM") and the section type that opens a configuration section. */
        private static final int QEVM = 0x5145564d;
        private static final int CONFIGURATION_SECTION = 0x07;

        /** The form of the device state in {@code file}: a stream with a configuration section, or devices alone. */
        public static Incoming of(final Path file) throws IOException
        {
            final byte[] head = new byte[9];
            try (InputStream in = Files.newInputStream(file))
            {
                if (in.readNBytes(head, 0, head.length) != head.length
                    || ByteBuffer.wrap(head).getInt(0) != QEVM)
                {
                    throw new IOException(file + ": not a QEMU device state (no QEVM header)");
                }
            }
            return head[8] == CONFIGURATION_SECTION ? MIGRATION_STREAM : DEVICE_STATE;
        }
    }

    /**
     * Starts QEMU. {@code ramFile}: the shared RAM file to use (created by QEMU if absent). {@code incoming}: boot,
     * or wait ({@code -incoming defer}) to load a checkpoint's device state of that form. {@code netns}: null for
     * the current one.
     */
    public static QemuProcess start(final VmSpec spec, final Path runDir, final Path ramFile, final Incoming incoming,
        final String netns) throws IOException
    {
        return start(spec, runDir, ramFile, incoming, netns, Map.of());
    }

    /** As above, with {@code env} added to QEMU's environment (e.g. the write-tracking preload library). */
    public static QemuProcess start(final VmSpec spec, final Path runDir, final Path ramFile, final Incoming incoming,
        final String netns, final Map<String, String> env) throws IOException
    {
        return start(spec, runDir, ramFile, incoming, netns, env, true);
    }

    /**
     * As above; {@code sharedRam} false maps {@code ramFile} privately ({@code share=off}): the guest's writes go to
     * pages of this process only and the file never changes (the running copy of hybrid mode), while pages the
     * guest did not write show the file as it is now.
     */
    public static QemuProcess start(final VmSpec spec, final Path runDir, final Path ramFile, final Incoming incoming,
        final String netns, final Map<String, String> env, final boolean sharedRam) throws IOException
    {
        return start(spec, runDir, ramFile, incoming, netns, env, sharedRam, null);
    }

    /** A VM without a kernel boots its disk (SeaBIOS, then the disk's bootloader). */
    private static String bootIndex(final VmSpec spec)
    {
        return spec.kernel() == null ? ",bootindex=1" : "";
    }

    /** The top block node of disk {@code index} with an overlay ({@code colod-top}, ...); its backing is {@link VmSpec#diskNode}. */
    public static String overlayNode(final int index)
    {
        return index == 0 ? "colod-top" : "colod-top" + index;
    }

    /**
     * QEMU arguments for disk {@code d} of {@code spec}: its image in its format as node {@link VmSpec#diskNode}, on a
     * virtio-blk device; with {@code overlay} (null: none) the guest's disk is that qcow2 file, whose backing is the
     * image node: the guest's writes go to the overlay only (the running copy of hybrid mode), and image locking is
     * off for both (the committed image is written by colod at each commit; the backing node is opened read-write
     * because only a takeover's block-commit writes it, and a read-only node cannot be committed into in QEMU 7.2).
     */
    private static List<String> diskArgs(final VmSpec spec, final int d, final Path overlay)
    {
        final VmSpec.Disk disk = spec.disks().get(d);
        final String node = VmSpec.diskNode(d);
        final String boot = d == 0 ? bootIndex(spec) : "";
        final List<String> a = new ArrayList<>(List.of(
            "-blockdev", "driver=file,filename=" + disk.image() + ",node-name=" + node + "-file" + (overlay == null ? "" : ",locking=off"),
            "-blockdev", "driver=" + disk.format().driver() + ",file=" + node + "-file,node-name=" + node));
        String guestNode = node;
        if (overlay != null)
        {
            guestNode = overlayNode(d);
            a.addAll(List.of("-blockdev", "driver=file,filename=" + overlay + ",node-name=" + guestNode + "-file,locking=off",
                "-blockdev", "driver=qcow2,file=" + guestNode + "-file,backing=" + node + ",node-name=" + guestNode));
        }
        if (disk.kind() == VmSpec.DiskKind.UEFI_VARS)
        {
            a.addAll(List.of("-machine", "pflash1=" + guestNode));
        }
        else
        {
            a.addAll(List.of("-device", "virtio-blk-pci,drive=" + guestNode + ",id=" + node + "-dev" + boot));
        }
        return a;
    }

    /**
     * As above; with {@code diskOverlays} (null: none) each disk's guest writes go to that qcow2 overlay of it
     * ({@link #diskArgs}).
     */
    public static QemuProcess start(final VmSpec spec, final Path runDir, final Path ramFile, final Incoming incoming,
        final String netns, final Map<String, String> env, final boolean sharedRam, final List<Path> diskOverlays)
        throws IOException
    {
        spec.check();
        Files.createDirectories(runDir);
        Files.createDirectories(ramFile.getParent());
        Files.deleteIfExists(qmpSocket(runDir));
        final List<String> cmd = new ArrayList<>();
        if (netns != null)
        {
            cmd.addAll(List.of("ip", "netns", "exec", netns));
        }
        cmd.add("qemu-system-x86_64");
        cmd.addAll(List.of("-name", spec.name(), "-accel", spec.accel(), "-nodefaults", "-display", "none",
            "-machine", "pc,memory-backend=ram0", "-smp", Integer.toString(spec.vcpus()),
            "-m", spec.memoryMiB() + "M",
            "-object", "memory-backend-file,id=ram0,size=" + spec.memoryMiB() + "M,mem-path=" + ramFile +
                (sharedRam ? ",share=on" : ",share=off"),
            "-qmp", "unix:" + qmpSocket(runDir) + ",server=on,wait=off",
            "-pidfile", runDir.resolve("qemu.pid").toString(),
            "-serial", "file:" + runDir.resolve(incoming != Incoming.NONE ? "serial-failover.log" : "serial.log")));
        if (spec.kernel() != null)
        {
            cmd.addAll(List.of("-kernel", spec.kernel().toString()));
        }
        if (spec.initrd() != null)
        {
            cmd.addAll(List.of("-initrd", spec.initrd().toString()));
        }
        if (spec.append() != null)
        {
            cmd.addAll(List.of("-append", spec.append()));
        }
        int i = 0;
        for (final VmSpec.Nic n : spec.nics())
        {
            cmd.addAll(List.of("-netdev", "tap,id=net" + i + ",ifname=" + n.tap() + ",script=no,downscript=no" +
                    (n.plainFrames() ? ",vnet_hdr=off" : ""),
                "-device", "virtio-net-pci,netdev=net" + i + ",mac=" + n.mac() + ",romfile="));
            i++;
        }
        if (spec.firmwareCode() != null)
        {
            // UEFI: the firmware's code on the first flash, read-only (its variable store is a tracked disk, pflash1)
            cmd.addAll(List.of("-blockdev", "driver=file,filename=" + spec.firmwareCode() + ",node-name=colod-fw-file,read-only=on",
                "-blockdev", "driver=raw,file=colod-fw-file,node-name=colod-fw,read-only=on", "-machine", "pflash0=colod-fw"));
        }
        for (int d = 0; d < spec.disks().size(); d++)
        {
            cmd.addAll(diskArgs(spec, d, diskOverlays == null ? null : diskOverlays.get(d)));
        }
        if (incoming != Incoming.NONE)
        {
            cmd.addAll(List.of("-incoming", "defer"));
        }
        if (incoming == Incoming.DEVICE_STATE)
        {
            cmd.addAll(List.of("-global", "migration.send-configuration=off", "-machine", "suppress-vmdesc=on"));
        }
        cmd.addAll(spec.extraArgs());
        LOG.info("vm={} starting QEMU{}: {}", spec.name(), netns == null ? "" : " in netns " + netns, String.join(" ", cmd));
        final ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
            .redirectOutput(runDir.resolve("qemu.out").toFile());
        pb.environment().putAll(env);
        final Process p = pb.start();
        final QmpClient qmp;
        try
        {
            qmp = QmpClient.connect(qmpSocket(runDir), spec.name(), QMP_TIMEOUT_MS);
            qmp.execute("migrate-set-capabilities", Map.of("capabilities",
                List.of(Map.of("capability", "x-ignore-shared", "state", true))), QMP_TIMEOUT_MS);
        }
        catch (final IOException ex)
        {
            p.destroyForcibly();
            throw new IOException("QEMU for vm " + spec.name() + " did not come up: " + ex.getMessage() + said(runDir), ex);
        }
        return new QemuProcess(spec, runDir, ramFile, p.toHandle(), qmp, false, sharedRam);
    }

    /**
     * Adopts the QEMU that an earlier colod started for {@code spec} and that still runs (after a colod crash,
     * restart or upgrade): its pidfile names a live QEMU whose command line is this VM's (name, RAM file and
     * size, each NIC's tap and MAC). Its RAM file may be any of {@code ramFiles}: the configured one, or the
     * standby image's that a failover resumed the VM from (a colod restarted on the host that took the VM over).
     * Reconnects QMP and resumes the guest if it was left paused (a crash mid-checkpoint), unless
     * {@code resumeIfPaused} is false (a fenced copy that is only to be stopped). Returns empty if no QEMU of this
     * VM runs; throws, naming the difference, if one runs that does not match (it is left alone).
     */
    public static Optional<QemuProcess> adopt(final VmSpec spec, final Path runDir, final List<Path> ramFiles,
        final boolean resumeIfPaused) throws IOException
    {
        final Path pidFile = runDir.resolve("qemu.pid");
        if (!Files.exists(pidFile))
        {
            return Optional.empty();
        }
        final Optional<ProcessHandle> live = Leftovers.liveQemu(pidFile);
        if (live.isEmpty())
        {
            return Optional.empty();
        }
        final ProcessHandle h = live.get();
        final String cmdline;
        try
        {
            cmdline = String.join(" ", Files.readString(Path.of("/proc/" + h.pid() + "/cmdline")).split("\0"));
        }
        catch (final IOException ex)
        {
            throw new IOException("vm " + spec.name() + ": cannot read the command line of QEMU pid " + h.pid() + ": " + ex, ex);
        }
        final Path ramFile = ramFiles.stream().filter(f -> cmdline.contains("mem-path=" + f + ",")).findFirst()
            .orElse(ramFiles.get(0));
        final List<String> expected = new ArrayList<>(List.of("-name " + spec.name(),
            "size=" + spec.memoryMiB() + "M,mem-path=" + ramFile + ",share=on"));
        for (final VmSpec.Nic n : spec.nics())
        {
            expected.add("ifname=" + n.tap() + ",");
            expected.add("mac=" + n.mac());
            if (n.plainFrames())
            {
                expected.add("ifname=" + n.tap() + ",script=no,downscript=no,vnet_hdr=off"); // buffer: xdp needs it
            }
        }
        for (int d = 0; d < spec.disks().size(); d++)
        {
            expected.add("filename=" + spec.disks().get(d).image() + ",node-name=" + VmSpec.diskNode(d) + "-file");
        }
        for (final String e : expected)
        {
            if (!cmdline.contains(e))
            {
                throw new IOException("vm " + spec.name() + ": QEMU pid " + h.pid() + " (from " + pidFile + ") runs, but not " +
                    "as configured: its command line lacks '" + e + "'; left alone: stop it or fix the configuration");
            }
        }
        final QmpClient qmp = QmpClient.connect(qmpSocket(runDir), spec.name(), QMP_TIMEOUT_MS);
        try
        {
            qmp.execute("migrate-set-capabilities", Map.of("capabilities",
                List.of(Map.of("capability", "x-ignore-shared", "state", true))), QMP_TIMEOUT_MS);
            final String status = qmp.execute("query-status", null, QMP_TIMEOUT_MS).path("status").asText();
            LOG.warn("vm={} adopted the running QEMU pid {} (status {})", spec.name(), h.pid(), status);
            if (resumeIfPaused && !"running".equals(status))
            {
                qmp.execute("cont", null, QMP_TIMEOUT_MS);
                LOG.warn("vm={} resumed the guest that an earlier colod left {}", spec.name(), status);
            }
        }
        catch (final IOException ex)
        {
            qmp.close();
            throw ex;
        }
        return Optional.of(new QemuProcess(spec, runDir, ramFile, h, qmp, true, true)); // share=on was checked
    }

    /**
     * What QEMU wrote to its output ({@code qemu.out} in {@code runDir}), its last lines, as "; QEMU said: ..."
     * to append to an error (QEMU's own reason, e.g. {@code Unknown savevm section}); empty when it said nothing.
     */
    public static String said(final Path runDir)
    {
        try
        {
            final List<String> lines = Files.readAllLines(runDir.resolve("qemu.out")).stream()
                .filter(l -> !l.isBlank()).toList();
            return lines.isEmpty() ? "" : "; QEMU said: " +
                String.join(" | ", lines.subList(Math.max(0, lines.size() - 5), lines.size())).trim();
        }
        catch (final IOException | UncheckedIOException ex)
        {
            return "";
        }
    }

    /** True if this QEMU was started by an earlier colod and adopted. */
    public boolean adopted()
    {
        return adopted;
    }

    public QmpClient qmp()
    {
        return qmp;
    }

    /**
     * Waits (polling {@code query-migrate} every millisecond, at most {@link #QMP_TIMEOUT_MS}) for the migration in
     * progress to end; returns its final status ({@code completed}, {@code failed}, {@code cancelled}) or the last
     * one seen when the wait ran out.
     */
    public String awaitMigration() throws IOException, InterruptedException
    {
        final long deadline = System.nanoTime() + QMP_TIMEOUT_MS * 1_000_000L;
        String status = "";
        while (System.nanoTime() - deadline < 0)
        {
            status = qmp.execute("query-migrate", null, QMP_TIMEOUT_MS).path("status").asText();
            if ("completed".equals(status) || "failed".equals(status) || "cancelled".equals(status))
            {
                return status;
            }
            Thread.sleep(1);
        }
        return status;
    }

    public Path ramFile()
    {
        return ramFile;
    }

    public Path runDir()
    {
        return runDir;
    }

    public VmSpec spec()
    {
        return spec;
    }

    public long pid()
    {
        return process.pid();
    }

    public boolean isAlive()
    {
        return process.isAlive();
    }

    /**
     * True if QEMU has exited. A killed process closes its sockets and drops its memory before its parent reaps
     * it, so whoever saw a failure first (the QMP reader, a pagemap scan, a RAM read) may ask while it still
     * looks alive: when QMP broke, waits up to {@code graceMs} for the exit to be seen, otherwise a short
     * {@value #EXIT_GLANCE_MS} ms.
     */
    public boolean exited(final long graceMs)
    {
        if (!process.isAlive())
        {
            return true;
        }
        return waitForExit(qmp.isBroken() ? graceMs : Math.min(graceMs, EXIT_GLANCE_MS));
    }

    private static final long EXIT_GLANCE_MS = 100;

    /** Sends QEMU SIGKILL and nothing else, as a crash of QEMU alone would look to the agent (tests). */
    public void crash()
    {
        process.destroyForcibly();
    }

    /** Waits up to {@code ms} for QEMU to exit; true if it has. */
    private boolean waitForExit(final long ms)
    {
        try
        {
            process.onExit().get(ms, TimeUnit.MILLISECONDS);
            return true;
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            return !process.isAlive();
        }
        catch (final ExecutionException | TimeoutException ex)
        {
            return !process.isAlive();
        }
    }

    /** Ends QEMU at once (SIGKILL), as a host crash would. */
    public void kill()
    {
        qmp.close();
        process.descendants().forEach(ProcessHandle::destroyForcibly);
        process.destroyForcibly();
        waitForExit(10_000);
    }

    /** Asks QEMU to quit, then kills it if it does not; removes its QMP socket and pidfile. */
    @Override
    public void close()
    {
        try
        {
            qmp.execute("quit", null, 2_000);
        }
        catch (final IOException ignore)
        {
            // it may already be gone; kill below makes sure
        }
        if (!waitForExit(5_000))
        {
            kill();
        }
        qmp.close();
        try
        {
            Files.deleteIfExists(qmpSocket(runDir));
            Files.deleteIfExists(runDir.resolve("qemu.pid"));
        }
        catch (final IOException ex)
        {
            LOG.warn("vm={} could not remove QEMU files: {}", spec.name(), ex.toString());
        }
    }
}
