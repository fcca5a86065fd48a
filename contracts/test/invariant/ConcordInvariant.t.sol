// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test, console} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Concord} from "../../Concord.sol";
import {DevToken} from "../../DevToken.sol";
import {ConcordHandler} from "./ConcordHandler.sol";

/// @notice Protocol invariants under random traffic from `ConcordHandler`.
/// forge-config: default.invariant.runs = 16
/// forge-config: default.invariant.depth = 200
contract ConcordInvariantTest is Test {
    Concord internal concord;
    DevToken internal token;
    ConcordHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new DevToken();
        concord = new Concord(IERC20(address(token)), 120);
        // The handler mints to its actors, so it owns the token from its constructor on.
        token.transferOwnership(vm.computeCreateAddress(address(this), vm.getNonce(address(this))));
        handler = new ConcordHandler(concord, token);
        targetContract(address(handler));
    }

    /// Print how far the traffic got in this run (submits ... settled rounds).
    function afterInvariant() external view {
        console.log("submits", handler.nSubmits(), "commits", handler.nCommits());
        console.log("reveals", handler.nReveals(), "settled rounds", handler.nRoundsSettled());
        console.log("rejected", handler.nRejected(), "rewarded", handler.nRewarded());
        console.log("unbonds", handler.nUnbonds());
    }

    /// The token balance of the protocol equals escrows + stakes + credited balances, and
    /// equals everything deposited minus everything withdrawn.
    function invariant_TokenConservation() public view {
        uint256 held = token.balanceOf(address(concord));
        assertEq(held, concord.totalLiabilities(), "balance == liabilities");
        assertEq(held, handler.ghostDeposited() - handler.ghostWithdrawn(), "balance == in - out");
    }

    /// The per-task budgets never exceed the escrow total (the rest is reserved round pools).
    function invariant_BudgetsWithinEscrow() public view {
        (uint256 escrow,,) = concord.totals();
        uint256 budgets;
        for (uint256 i; i < handler.taskCount(); ++i) {
            budgets += concord.taskState(handler.tasks(i)).budget;
        }
        assertLe(budgets, escrow);
    }

    /// No submission is settled twice, and no round pays more than its reward and fee.
    function invariant_NoDoublePayment() public view {
        assertFalse(handler.doubleSettled(), "settled twice");
        assertFalse(handler.overpaid(), "overpaid");
    }

    /// A node with a submission or commitment in an unfinalized round never unbonds.
    function invariant_NoUnbondingAroundPendingSlash() public view {
        assertFalse(handler.unbondedWithPendingWork());
    }

    /// Heads and finalized rounds only move forward; final models never change.
    function invariant_MonotoneRounds() public view {
        assertFalse(handler.roundsWentBack());
    }
}
