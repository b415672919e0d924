package dev.colod.netfilter;

import dev.colod.buffer.BackendProvider;
import dev.colod.os.HostTools;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/** {@code buffer: nfqueue}: frames held in the kernel's netfilter queue; colod sees packet ids only. */
public final class NfqueueProvider implements BackendProvider
{
    @Override
    public String name()
    {
        return "nfqueue";
    }

    @Override
    public List<String> missing()
    {
        return HostTools.missing(List.of("iptables:iptables", "ip6tables:iptables", "sysctl:procps"), List.of());
    }

    @Override
    public Installed install(final NicSpec nic, final Path plumbingDir) throws IOException
    {
        final NfqueueRules rules = NfqueueRules.install(nic.tap(), nic.queueNum(), nic.vm(), nic.netns(), plumbingDir);
        return new Installed(NfqueueBackend.on(nic.queueNum(), nic.failOpen(), nic.netns()), rules, 0);
    }

    @Override
    public List<String> recover(final Path plumbingDir) throws IOException
    {
        return NfqueueRules.recover(plumbingDir);
    }
}
