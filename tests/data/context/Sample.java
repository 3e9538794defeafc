package com.example.bank;

import java.util.ArrayList;
import java.util.List;

public class Sample {
    private final List<Long> ledger = new ArrayList<>();
    private long balance;

    public Sample(long opening) {
        this.balance = opening;
        ledger.add(opening);
    }

    public void deposit(long amount) {
        if (amount <= 0) {
            throw new IllegalArgumentException("amount must be positive");
        }
        balance += amount;
        ledger.add(amount);
    }

    public boolean withdraw(long amount) {
        if (amount > balance) {
            return false;
        }
        balance -= amount;
        ledger.add(-amount);
        return true;
    }

    public long getBalance() {
        return balance;
    }

    public String statement() {
        StringBuilder sb = new StringBuilder("Statement:\n");
        for (long entry : ledger) {
            sb.append(entry).append('\n');
        }
        return sb.toString();
    }
}
