package dev.colod.buffer;

import dev.colod.core.spi.OutputCommit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Predicate;

/**
 * Output commit of one VM: what the primary engine says, applied to the epoch ledger of each of its NICs
 * (whatever their backends). Wants a checkpoint when any NIC does.
 */
public final class VmOutputCommit implements OutputCommit
{
    private static final Logger LOG = LoggerFactory.getLogger(VmOutputCommit.class);

    private final String vm;
    private final List<EpochLedger> nics;

    public VmOutputCommit(final String vm, final List<EpochLedger> nics)
    {
        this.vm = vm;
        this.nics = List.copyOf(nics);
    }

    @Override
    public void hold(final long firstEpoch)
    {
        nics.forEach(n -> n.hold(firstEpoch));
        LOG.info("vm={} holding guest output of {} NIC(s) from epoch {}", vm, nics.size(), firstEpoch);
    }

    @Override
    public void seal(final long epoch)
    {
        for (final EpochLedger n : nics)
        {
            n.seal(epoch);
        }
    }

    @Override
    public void release(final long epoch)
    {
        for (final EpochLedger n : nics)
        {
            n.release(epoch);
        }
    }

    @Override
    public void passThrough(final String reason)
    {
        nics.forEach(n -> n.passThrough(reason));
        LOG.warn("vm={} released all held output; passing it straight through (unprotected): {}", vm, reason);
    }

    @Override
    public void fence(final String reason)
    {
        nics.forEach(n -> n.fence(reason));
        LOG.error("vm={} dropped all held output (fenced): {}", vm, reason);
    }

    @Override
    public boolean wantsCheckpoint()
    {
        return any(EpochLedger::wantsCheckpoint);
    }

    private boolean any(final Predicate<EpochLedger> p)
    {
        for (final EpochLedger n : nics)
        {
            if (p.test(n))
            {
                return true;
            }
        }
        return false;
    }

    @Override
    public String comparisonWants()
    {
        for (final EpochLedger n : nics)
        {
            final String c = n.comparisonWants();
            if (c != null)
            {
                return c;
            }
        }
        return null;
    }

    /** The NICs' ledgers, in the VM's NIC order. */
    public List<EpochLedger> ledgers()
    {
        return nics;
    }

    @Override
    public void onOpenOutput(final Runnable wake)
    {
        nics.forEach(n -> n.onOpenOutput(wake));
    }

    @Override
    public boolean holdsOpenOutput()
    {
        return any(EpochLedger::holdsOpenOutput);
    }

    public List<NicStats> stats()
    {
        final List<NicStats> out = new ArrayList<>(nics.size());
        for (final EpochLedger n : nics)
        {
            out.add(n.stats());
        }
        return out;
    }
}
