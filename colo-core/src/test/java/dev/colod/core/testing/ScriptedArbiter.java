package dev.colod.core.testing;

import dev.colod.core.spi.Arbiter;

import java.util.Collections;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/** An arbiter whose answers the test sets, recording what the engine asked: for the engines' logic only. */
public final class ScriptedArbiter implements Arbiter
{
    public volatile Verdict unprotected = new Verdict(Verdict.Kind.WAIT, 0, "scripted: store unreachable");
    public volatile Verdict claim = new Verdict(Verdict.Kind.WAIT, 0, "scripted: the old lease still runs");
    public volatile boolean lease = true;
    public volatile long token;
    public final List<String> calls = new CopyOnWriteArrayList<>();

    public static Verdict granted(final long token)
    {
        return new Verdict(Verdict.Kind.GRANTED, token, "scripted grant");
    }

    @Override
    public boolean arbitrated()
    {
        return true;
    }

    @Override
    public boolean mayServeUnprotected()
    {
        return lease;
    }

    @Override
    public long token()
    {
        return token;
    }

    @Override
    public Verdict goUnprotected(final long lastAcknowledged)
    {
        calls.add("unprotected " + lastAcknowledged);
        final Verdict v = unprotected;
        if (v.kind() == Verdict.Kind.GRANTED)
        {
            token = v.token();
        }
        return v;
    }

    @Override
    public void protectedBy(final long checkpoint)
    {
        calls.add("protected " + checkpoint);
    }

    @Override
    public Verdict claimForFailover(final long committed)
    {
        calls.add("claim " + committed);
        return claim;
    }

    @Override
    public void resign(final String why)
    {
        calls.add("resign " + why);
    }

    @Override
    public String describe()
    {
        return "scripted";
    }

    @Override
    public void close()
    {
    }

    public List<String> callsSnapshot()
    {
        return Collections.unmodifiableList(List.copyOf(calls));
    }
}
