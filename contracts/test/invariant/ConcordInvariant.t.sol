// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test, console} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Concord} from "../../Concord.sol";
import {deployConcord} from "../utils/DeployConcord.sol";
import {DevToken} from "../../DevToken.sol";
import {ConcordHandler} from "./ConcordHandler.sol";

/// @notice Protocol invariants under random traffic from `ConcordHandler`. The handler itself
///         never reverts (a revert there would roll back exactly the call that broke a ledger).
/// forge-config: default.invariant.runs = 16
/// forge-config: default.invariant.depth = 400
/// forge-config: deep.invariant.runs = 256
/// forge-config: deep.invariant.depth = 400
/// forge-config: default.invariant.fail-on-revert = true
/// forge-config: deep.invariant.fail-on-revert = true
contract ConcordInvariantTest is Test {
    Concord internal concord;
    DevToken internal token;
    ConcordHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new DevToken();
        concord = deployConcord(IERC20(address(token)), 120);
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
        console.log("unbonds", handler.nUnbonds(), "void rounds", handler.nVoid());
        console.log("empty rounds", handler.nEmpty(), "ties", handler.nTies());
        console.log("closed", handler.nClosed(), "reclaimed", handler.nReclaimed());
        console.log("finalize on any round", handler.nPhantomTries(), "removed validators", handler.nRemoved());
        console.log("dry-budget observations", handler.nDry());
        console.log("seeds fixed", handler.nSeedsFixed(), "anchors", handler.nSeedAnchors());
        console.log("fixSeed tries", handler.nSeedTries(), "aged-out rolls", handler.nSeedReanchors());
        console.log("share commits", handler.nShareCommits(), "share reveals", handler.nShareReveals());
        console.log("shares withheld", handler.nSharesWithheld(), "top-ups refused", handler.nTopUpsRefused());
        console.log("rejoins refused (cooldown)", handler.nRejoinRefused(), "rejoined", handler.nRejoined());
    }

    /// The token balance of the protocol equals escrows + stakes + credited balances, and
    /// equals everything deposited minus everything withdrawn and burned.
    function invariant_TokenConservation() public view {
        uint256 held = token.balanceOf(address(concord));
        assertEq(held, concord.totalLiabilities(), "balance == liabilities");
        assertEq(held, handler.ghostDeposited() - handler.ghostWithdrawn() - concord.burned(), "balance == in - out");
    }

    /// Burned = the sum of slashes less bounties (from the slash events) = the StakeBurned
    /// events = what the burn address holds.
    function invariant_BurnedIsSlashesLessBounties() public view {
        assertEq(concord.burned(), handler.ghostSlashedNet(), "burned == slashes - bounties");
        assertEq(concord.burned(), handler.ghostBurnEvents(), "burned == StakeBurned events");
        assertEq(token.balanceOf(address(0xdEaD)), concord.burned(), "burn address balance");
    }

    /// Withheld shares are slashed, once per validator and round; a removed validator does not
    /// rejoin during its cooldown; ties take no one's share; top-ups are refused only when no
    /// round can use them.
    function invariant_Issue21Rules() public view {
        assertFalse(handler.shareSlashBroken(), "withheld share unslashed, or slashed twice");
        assertFalse(handler.rejoinedEarly(), "rejoined during the cooldown");
        assertFalse(handler.proRataBroken(), "pay other than reward * work / (accepted + tied work)");
        assertFalse(handler.topUpRefused(), "top-up of a task that can still open a round refused");
    }

    /// Per-task solvency: for every task, what the contract holds for it equals its budget plus
    /// the pools reserved by its open rounds, and the sum over tasks is the escrow total.
    function invariant_PerTaskSolvency() public view {
        (uint256 escrow,,) = concord.totals();
        uint256 sum;
        for (uint256 i; i < handler.taskCount(); ++i) {
            (uint256 held, uint256 budget, uint256 reserved) = concord.taskEscrow(handler.tasks(i));
            assertEq(held, budget + reserved, "task held == budget + reserved");
            sum += held;
        }
        assertEq(sum, escrow, "sum of tasks == escrow total");
    }

    /// Per-task ledger: what the contract holds for a task equals, from the events alone, what
    /// was escrowed in plus the slashes the task kept, minus what it paid out or returned.
    function invariant_PerTaskLedger() public view {
        for (uint256 i; i < handler.taskCount(); ++i) {
            uint256 id = handler.tasks(i);
            (uint256 held,,) = concord.taskEscrow(id);
            assertEq(held, handler.ghostTaskIn(id) - handler.ghostTaskOut(id), "task ledger");
        }
    }

    /// Per node and account: a stake is what was staked minus slashes and unbonds; a credited
    /// balance is what the events credited minus withdrawals.
    function invariant_PerNodeStakeAndBalance() public view {
        address[] memory all = handler.accounts();
        for (uint256 i; i < all.length; ++i) {
            assertEq(concord.nodeInfo(all[i]).stake, handler.ghostStake(all[i]), "stake ledger");
            assertEq(concord.balanceOf(all[i]), handler.ghostCredited(all[i]), "credit ledger");
        }
    }

    /// Only an opened, closed, unsettled round settles; over-claims are refused.
    function invariant_NoPhantomSettlement() public view {
        assertFalse(handler.phantomSettled(), "phantom round, early reclaim or stranger close");
        assertFalse(handler.overclaimAccepted(), "workUnits above maxWorkUnits accepted");
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

    /// A round's check seed is fixed once, anchored at or after the last submission, equal to
    /// the hash of the anchor's block value and exactly the revealed shares, only on a live
    /// round past its submit phase, and before any commit of a round with submissions.
    function invariant_CheckSeedFixedOnceAfterSubmissions() public view {
        assertFalse(handler.seedBroken(), "check seed broken");
    }

    /// Heads and finalized rounds only move forward; final models never change.
    function invariant_MonotoneRounds() public view {
        assertFalse(handler.roundsWentBack());
    }
}
