package dev.colod.agent.qemu;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Pattern;

/**
 * What QEMU runs for one protected VM. Validated by {@link #check()} before anything starts: a VM that could
 * not be checkpointed is refused with the reason.
 *
 * @param name      VM name (also names files in the runtime directory)
 * @param memoryMiB guest RAM; it is always a shared memory-backend file (the agent reads it for checkpoints)
 * @param vcpus     virtual CPUs
 * @param kernel    kernel image (direct boot) or null with a disk in {@code extraArgs}
 * @param initrd    initramfs or null
 * @param append    kernel command line or null
 * @param nics      NICs: host tap name and guest MAC
 * @param accel     {@code kvm} (production) or {@code tcg}
 * @param ramDir    where the RAM file lives: a tmpfs such as /dev/shm
 * @param extraArgs more QEMU arguments, checked for things that break checkpointing
 * @param disks     the guest's disks in order (empty: none), each an image file on block node {@link #diskNode},
 *                  attached as virtio-blk, or as the UEFI variable store's flash ({@link DiskKind#UEFI_VARS}); the
 *                  first is the one a VM without a kernel boots
 * @param firmwareCode UEFI firmware code (OVMF, read-only flash), or null for BIOS (SeaBIOS)
 */
public record VmSpec(String name, int memoryMiB, int vcpus, Path kernel, Path initrd, String append, List<Nic> nics,
                     String accel, Path ramDir, List<String> extraArgs, List<Disk> disks, Path firmwareCode)
{
    /** A BIOS VM with {@code disks}. */
    public VmSpec(final String name, final int memoryMiB, final int vcpus, final Path kernel, final Path initrd,
        final String append, final List<Nic> nics, final String accel, final Path ramDir, final List<String> extraArgs,
        final List<Disk> disks)
    {
        this(name, memoryMiB, vcpus, kernel, initrd, append, nics, accel, ramDir, extraArgs, disks, null);
    }

    /** The block node of the guest's first disk (its format over the image file): its dirty bitmaps are the replication's. */
    public static final String DISK_NODE = "colod-disk";

    /** A VM with one raw disk {@code disk} (null: none). */
    public VmSpec(final String name, final int memoryMiB, final int vcpus, final Path kernel, final Path initrd,
        final String append, final List<Nic> nics, final String accel, final Path ramDir, final List<String> extraArgs,
        final Path disk)
    {
        this(name, memoryMiB, vcpus, kernel, initrd, append, nics, accel, ramDir, extraArgs,
            disk == null ? List.of() : List.of(new Disk(disk, DiskFormat.RAW)));
    }

    /** The block node of disk {@code index}: {@value #DISK_NODE}, {@value #DISK_NODE}1, ... */
    public static String diskNode(final int index)
    {
        return index == 0 ? DISK_NODE : DISK_NODE + index;
    }

    /** How a disk image file is laid out. */
    public enum DiskFormat
    {
        RAW, QCOW2;

        /** QEMU's block driver name. */
        public String driver()
        {
            return name().toLowerCase();
        }
    }

    /** What the guest sees a disk as. */
    public enum DiskKind
    {
        /** A virtio-blk disk. */
        VIRTIO,
        /** The UEFI variable store: a raw file on the second flash ({@code pflash1}), written by the firmware. */
        UEFI_VARS
    }

    /** A disk: its image file, format and what the guest sees it as. */
    public record Disk(Path image, DiskFormat format, DiskKind kind)
    {
        public Disk(final Path image, final DiskFormat format)
        {
            this(image, format, DiskKind.VIRTIO);
        }
    }

    /**
     * @param tap         the host tap's name
     * @param mac         the guest's MAC
     * @param plainFrames QEMU writes plain Ethernet frames to the tap ({@code vnet_hdr=off}: no checksum or
     *                    segmentation offload, every frame at most the MTU): what XDP on the tap needs
     */
    public record Nic(String tap, String mac, boolean plainFrames)
    {
        public Nic(final String tap, final String mac)
        {
            this(tap, mac, false);
        }
    }

    /** As many as a checkpoint can carry. */
    public static final int MAX_DISKS = 16;
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,62}");
    private static final Pattern MAC = Pattern.compile("(?i)[0-9a-f]{2}(:[0-9a-f]{2}){5}");
    /** Arguments whose devices or memory cannot be checkpointed this way, with the reason. */
    private static final String[][] REFUSED = {
        {"vfio", "a VFIO pass-through device cannot be migrated, so it cannot be checkpointed"},
        {"-mem-path", "RAM is configured by colod (a shared memory-backend file); remove -mem-path"},
        {"memory-backend-ram", "RAM must be a shared memory-backend file, not memory-backend-ram"},
        {"-m ", "RAM size is configured by colod (memory-mib); remove -m"},
        {"ivshmem", "ivshmem memory is outside the checkpointed RAM"},
        {"-snapshot", "-snapshot disks are not replicated"},
        {"usb-host", "a USB pass-through device cannot be migrated"},
        {"-drive", "disks other than those in disks: are not replicated"},
        {"-blockdev", "disks other than those in disks: are not replicated"},
        {"-hda", "disks other than those in disks: are not replicated"},
        {"-cdrom", "a CD-ROM is not replicated"},
    };

    public VmSpec check()
    {
        require(name != null && NAME.matcher(name).matches(), "name", "must match " + NAME.pattern() + ", was " + name);
        require(memoryMiB >= 16 && memoryMiB <= 1 << 20, "memory-mib", "must be 16..1048576, was " + memoryMiB);
        require(vcpus >= 1 && vcpus <= 256, "vcpus", "must be 1..256, was " + vcpus);
        require("kvm".equals(accel) || "tcg".equals(accel), "accel", "must be kvm or tcg, was " + accel);
        require(kernel == null || Files.isReadable(kernel), "kernel", "cannot read " + kernel);
        require(initrd == null || Files.isReadable(initrd), "initrd", "cannot read " + initrd);
        require(nics != null && !nics.isEmpty(), "nics", "at least one NIC is needed (output commit holds its frames)");
        for (final Nic n : nics)
        {
            require(n.tap() != null && !n.tap().isEmpty() && n.tap().length() <= 15, "nics.tap",
                "must be 1..15 characters, was " + n.tap());
            require(n.mac() != null && MAC.matcher(n.mac()).matches(), "nics.mac",
                "must be a MAC like 52:54:00:12:34:56, was " + n.mac());
        }
        require(disks != null && disks.size() <= MAX_DISKS, "disks", "at most " + MAX_DISKS + " disks");
        require(firmwareCode == null || Files.isReadable(firmwareCode), "uefi-code", "cannot read " + firmwareCode);
        require((firmwareCode != null) == disks.stream().anyMatch(d -> d.kind() == DiskKind.UEFI_VARS), "uefi-vars",
            "UEFI needs its firmware code and one variable store, BIOS neither");
        for (final Disk d : disks)
        {
            final Path disk = d.image();
            require(Files.exists(disk), "disk", disk + " does not exist");
            require(Files.isRegularFile(disk), "disk", disk + " is not a regular file (block devices are not supported yet)");
            require(Files.isReadable(disk) && Files.isWritable(disk), "disk", disk + " is not readable and writable");
        }
        final String extra = " " + String.join(" ", extraArgs) + " ";
        for (final String[] r : REFUSED)
        {
            require(!extra.contains(r[0]), "extra-args", "cannot be checkpointed: " + r[1]);
        }
        return this;
    }

    private void require(final boolean ok, final String field, final String why)
    {
        if (!ok)
        {
            throw new IllegalArgumentException("vm " + name + ": invalid " + field + ": " + why);
        }
    }

    public long memoryBytes()
    {
        return (long)memoryMiB << 20;
    }
}
