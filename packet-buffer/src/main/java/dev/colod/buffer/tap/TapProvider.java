package dev.colod.buffer.tap;

import dev.colod.buffer.BackendProvider;
import dev.colod.buffer.net.PlumbingState;
import dev.colod.os.HostTools;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/** {@code buffer: tap}: frames held in colod's memory, between two agent taps (the default). */
public final class TapProvider implements BackendProvider
{
    @Override
    public String name()
    {
        return "tap";
    }

    @Override
    public List<String> missing()
    {
        return HostTools.missing(List.of("ip:iproute2", "tc:iproute2"), List.of("/dev/net/tun"));
    }

    @Override
    public Installed install(final NicSpec nic, final Path plumbingDir) throws IOException
    {
        final TapPlumbing p = TapPlumbing.install(nic.tap(), nic.bridge(), nic.netns(), plumbingDir);
        return new Installed(TapBackend.on(p.guestTap(), p.uplinkTap(), p::notRedirected), p, p.droppedByStaleRedirect());
    }

    @Override
    public List<String> recover(final Path plumbingDir) throws IOException
    {
        return PlumbingState.recover(plumbingDir);
    }
}
