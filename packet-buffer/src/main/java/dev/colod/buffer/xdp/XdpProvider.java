package dev.colod.buffer.xdp;

import dev.colod.buffer.BackendProvider;
import dev.colod.buffer.net.PlumbingState;
import dev.colod.os.HostTools;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/** {@code buffer: xdp}: frames held in an AF_XDP socket's UMEM, steered by XDP programs on the VM tap. */
public final class XdpProvider implements BackendProvider
{
    @Override
    public String name()
    {
        return "xdp";
    }

    @Override
    public boolean needsPlainFrames()
    {
        return true;
    }

    @Override
    public List<String> missing()
    {
        return HostTools.missing(List.of("ip:iproute2"), List.of());
    }

    @Override
    public Installed install(final NicSpec nic, final Path plumbingDir) throws IOException
    {
        final XdpPlumbing p = XdpPlumbing.install(nic.tap(), nic.bridge(), nic.netns(), plumbingDir);
        return new Installed(XdpBackend.on(p), p, 0);
    }

    /** Its state file is the shared one ({@link PlumbingState}): the veth pair goes, the tap back on its bridge. */
    @Override
    public List<String> recover(final Path plumbingDir) throws IOException
    {
        return PlumbingState.recover(plumbingDir);
    }
}
