package dev.colod.agent.qemu;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class IncomingTest
{
    @TempDir
    Path dir;

    private Path state(final int magic, final int sectionType) throws IOException
    {
        final Path f = dir.resolve("device.state");
        Files.write(f, ByteBuffer.allocate(16).putInt(magic).putInt(3).put((byte)sectionType).array());
        return f;
    }

    @Test
    void aStreamWithAConfigurationSectionIsAMigrationStreamAndOneWithoutIsTheDevicesAlone() throws Exception
    {
        // what `migrate` writes (format 2): QEVM, version 3, QEMU_VM_CONFIGURATION (7); xen-save-devices-state:
        // QEVM, version 3, the first device's QEMU_VM_SECTION_FULL (4)
        assertThat(QemuProcess.Incoming.of(state(0x5145564d, 7))).isEqualTo(QemuProcess.Incoming.MIGRATION_STREAM);
        assertThat(QemuProcess.Incoming.of(state(0x5145564d, 4))).isEqualTo(QemuProcess.Incoming.DEVICE_STATE);
    }

    @Test
    void anythingElseIsRefusedNamingTheFile() throws Exception
    {
        final Path f = state(0x12345678, 4);
        assertThatThrownBy(() -> QemuProcess.Incoming.of(f)).isInstanceOf(IOException.class)
            .hasMessageContaining(f.toString()).hasMessageContaining("not a QEMU device state");
        Files.write(f, new byte[]{0x51, 0x45});
        assertThatThrownBy(() -> QemuProcess.Incoming.of(f)).isInstanceOf(IOException.class);
    }
}
