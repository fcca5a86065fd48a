// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ConcordFixture} from "./utils/ConcordFixture.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordEvents} from "../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";

/// @notice The settlement-soundness rules (issue 9), one test per rule, named after it:
///         phantom rounds, per-task solvency, ties, bounded work claims, the exits of a task,
///         freed validator slots, no pay for nothing, bounds at creation.
contract SettlementSoundnessTest is ConcordFixture {
    bytes32 internal constant M1 = keccak256("m1");

    function _assertSolvent(uint256 id) internal view {
        (uint256 held, uint256 budget, uint256 reserved) = concord.taskEscrow(id);
        assertEq(held, budget + reserved, "task holds budget + reserved pools");
    }

    // --- only an opened, closed, unsettled round can be finalized ---------------------------

    /// The audit's finding: after the last round of a fixed-length task, `finalize(maxRounds)`
    /// re-read a recycled ring slot and settled it again, crediting budget no token backs.
    function test_RevertWhen_FinalizeRoundAfterLastRound() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxRounds = 2;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        _playRound(id, 0, 0, 1, _words(1), M1);
        _playRound(id, 1, 1, 1, _words(1), M1);
        assertEq(concord.taskState(id).finalizedRounds, 2);
        vm.warp(block.timestamp + 10_000);
        for (uint256 i; i < 3; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundNotOpened.selector, id, 2));
            concord.finalize(id, 2, 100);
        }
        _assertSolvent(id);
    }

    function test_RevertWhen_FinalizeRoundAfterBudgetRanDry() public {
        uint256 id = _taskWith(_params(), REWARD + FEE, 1, 2); // one round of budget
        _playRound(id, 0, 0, 1, _words(1), M1);
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Pending));
        vm.warp(block.timestamp + 10_000);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundNotOpened.selector, id, 1));
        concord.finalize(id, 1, 100);
        _assertSolvent(id);
    }

    /// asyncLevel 1 pre-writes ring slot 1 for round 1 at creation; with maxRounds 1 round 1
    /// never opens, yet its slot read as a void round past its phases (a whole pool to credit).
    function test_RevertWhen_FinalizePreWrittenSlotOfRoundThatNeverOpened() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxRounds = 1;
        p.asyncLevel = 1;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        _playRound(id, 0, 0, 1, _words(1), M1);
        vm.warp(block.timestamp + 10_000);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundNotOpened.selector, id, 1));
        concord.finalize(id, 1, 100);
        (uint256 held, uint256 budget,) = concord.taskEscrow(id);
        assertEq(held, budget, "nothing reserved, nothing phantom");
        assertEq(budget, 1000e18 - REWARD - FEE);
    }

    function test_RevertWhen_FinalizeSettledRoundAgain() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2);
        _playRound(id, 0, 0, 1, _words(1), M1);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundAlreadySettled.selector, id, 0));
        concord.finalize(id, 0, 100);
    }

    /// The replay the audit described: an initiator of a finished task finalizes the round after
    /// its last one again and again, then reclaims. Before the fix each call credited the pool
    /// once more, re-paid the validators' fee and slashed a non-revealer again; now every call
    /// reverts and reclaim returns exactly what the task holds, leaving the other task whole.
    function test_PhantomFinalizeCannotDrainOtherTasks() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxRounds = 1;
        uint256 a = _taskWith(p, 200e18, 1, 3);
        uint256 b = _createTask(_params(), 5000e18);
        (uint256 heldB,,) = concord.taskEscrow(b);
        _submit(a, 0, 0, trainers[0], 10);
        _warpPast(a, 0, IConcordTypes.Phase.Submit);
        for (uint256 v; v < 3; ++v) {
            _commit(a, 0, validators[v], _words(1), M1);
        }
        _warpPast(a, 0, IConcordTypes.Phase.Commit);
        _reveal(a, 0, validators[0], _words(1), M1);
        _reveal(a, 0, validators[1], _words(1), M1); // validator 2 withholds its reveal
        _warpPast(a, 0, IConcordTypes.Phase.Reveal);
        _finalizeAll(a, 0);
        uint256 slashedOnce = concord.nodeInfo(validators[2]).stake;
        for (uint256 i; i < 5; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundNotOpened.selector, a, 1));
            concord.finalize(a, 1, 100);
        }
        assertEq(concord.nodeInfo(validators[2]).stake, slashedOnce, "slashed once");
        (uint256 heldA, uint256 budgetA,) = concord.taskEscrow(a);
        vm.prank(initiator);
        concord.reclaimBudget(a);
        assertEq(concord.balanceOf(initiator), budgetA);
        assertEq(budgetA, heldA);
        assertEq(budgetA, 200e18 - REWARD - FEE, "the leftover (the non-revealer's slash was burned)");
        (uint256 heldBAfter,,) = concord.taskEscrow(b);
        assertEq(heldBAfter, heldB, "task b untouched");
        _assertSolvent(a);
        _assertSolvent(b);
        _assertConserved();
    }

    // --- per-task solvency ------------------------------------------------------------------

    function test_TaskEscrowEqualsBudgetPlusReservedPools() public {
        IConcordTypes.TaskParams memory p = _params();
        p.asyncLevel = 1;
        uint256 id = _taskWith(p, 1000e18, 2, 2);
        (uint256 held, uint256 budget, uint256 reserved) = concord.taskEscrow(id);
        assertEq(held, 1000e18);
        assertEq(reserved, REWARD + FEE, "round 0 reserved");
        assertEq(budget, 1000e18 - REWARD - FEE);
        _submit(id, 0, 0, trainers[0], 10);
        _submit(id, 0, 0, trainers[1], 30); // round 0's submit closes, round 1 is due
        concord.advance(id); // ... and recorded
        (, budget, reserved) = concord.taskEscrow(id);
        assertEq(reserved, 2 * (REWARD + FEE), "rounds 0 and 1 reserved");
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _voteAll(id, 0, 2, _oneBit(2, 1), M1);
        assertFalse(concord.finalize(id, 0, 3)); // tally both + pay one: mid-finalize
        _assertSolvent(id);
        (, , reserved) = concord.taskEscrow(id);
        assertEq(reserved, 2 * (REWARD + FEE) - REWARD, "paid reward left the pool");
        _finalizeAll(id, 0);
        _assertSolvent(id);
        (held,,) = concord.taskEscrow(id);
        assertEq(held, 1000e18 - REWARD - FEE, "reward and fee out; the slash burned, not kept");
        _assertConserved();
    }

    // --- bounded work claims ----------------------------------------------------------------

    function test_RevertWhen_WorkUnitsAboveMax() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxWorkUnits = 1000;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WorkUnitsAboveMax.selector, id, 1001, 1000));
        concord.submit(id, 0, 0, keccak256("b"), keccak256("p"), 1001);
        _submit(id, 0, 0, trainers[0], 1000);
    }

    function test_RevertWhen_CreateTaskWithZeroMaxWorkUnits() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxWorkUnits = 0;
        vm.prank(initiator);
        vm.expectRevert(IConcordErrors.ZeroWorkUnits.selector);
        concord.createTask(p, 1000e18);
    }

    /// Accepted claims share the reward pro rata and never more than it in total: with every
    /// claim at most maxWorkUnits, a claimant's share is its work over the accepted work.
    function testFuzz_AcceptedClaimTakesOnlyItsShare(uint64 w0, uint64 w1, uint64 w2) public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxWorkUnits = 4096;
        uint64[3] memory w = [uint64(bound(w0, 1, 4096)), uint64(bound(w1, 1, 4096)), uint64(bound(w2, 1, 4096))];
        uint256 id = _taskWith(p, 1000e18, 3, 2);
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], w[i]);
        }
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _voteAll(id, 0, 2, _words(3), M1);
        _finalizeAll(id, 0);
        uint256 total = uint256(w[0]) + w[1] + w[2];
        uint256 paid;
        for (uint256 i; i < 3; ++i) {
            uint256 got = concord.balanceOf(trainers[i]);
            assertEq(got, uint256(REWARD) * w[i] / total);
            paid += got;
        }
        assertLe(paid, REWARD);
        _assertSolvent(id);
    }

    // --- no escrow locked forever -----------------------------------------------------------

    /// A budget-limited task has an exit: close it; the round in flight settles normally, no
    /// round opens after, then the initiator reclaims what is left.
    function test_CloseTaskLetsInFlightRoundSettleThenReclaim() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2); // maxRounds = 0
        _submit(id, 0, 0, trainers[0], 10);
        vm.prank(initiator);
        vm.expectEmit(address(concord));
        emit IConcordEvents.TaskClosing(id, 0);
        concord.closeTask(id);
        assertTrue(concord.taskState(id).closed);
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TaskNotOver.selector, id));
        concord.reclaimBudget(id);
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _voteAll(id, 0, 2, _words(1), M1);
        _finalizeAll(id, 0);
        assertEq(concord.balanceOf(trainers[0]), REWARD, "in-flight round paid as usual");
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Pending), "no round after close");
        vm.warp(block.timestamp + 10_000);
        assertEq(concord.taskState(id).headRound, 0);
        vm.prank(initiator);
        concord.reclaimBudget(id);
        assertEq(concord.balanceOf(initiator), 1000e18 - REWARD - FEE);
        (uint256 held,,) = concord.taskEscrow(id);
        assertEq(held, 0, "nothing left locked");
        _assertConserved();
    }

    /// A task whose rounds keep voiding (minValidators never reached) can be closed and emptied.
    function test_CloseVoidingTaskReturnsItsWholeBudget() public {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 3;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        _playRound(id, 0, 0, 1, _words(1), M1);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Void));
        vm.prank(initiator);
        concord.closeTask(id);
        _submit(id, 1, 1, trainers[0], 10); // round 1 opened before the close; it still runs
        _warpPast(id, 1, IConcordTypes.Phase.Submit);
        _warpPast(id, 1, IConcordTypes.Phase.Commit);
        _warpPast(id, 1, IConcordTypes.Phase.Reveal);
        _finalizeAll(id, 1);
        vm.prank(initiator);
        concord.reclaimBudget(id);
        assertEq(concord.balanceOf(initiator), 1000e18, "void rounds returned every token");
        _assertConserved();
    }

    function test_RevertWhen_CloseTaskByNonInitiator() public {
        uint256 id = _taskWith(_params(), 1000e18, 0, 0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotInitiator.selector, id, stranger));
        concord.closeTask(id);
    }

    function test_RevertWhen_CloseTwiceOrTopUpClosedTask() public {
        uint256 id = _taskWith(_params(), 1000e18, 0, 0);
        vm.prank(initiator);
        concord.closeTask(id);
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TaskIsClosed.selector, id));
        concord.closeTask(id);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TaskIsClosed.selector, id));
        concord.topUp(id, 1e18);
    }

    /// Slot squatting: 64 sybils join, leave and take their stake back; the slots are free again.
    function test_LeavingValidatorsFreeTheirSlots() public {
        uint256 id = _taskWith(_params(), 1000e18, 0, 0);
        _makeValidators(64);
        for (uint256 i; i < 64; ++i) {
            vm.prank(validators[i]);
            concord.join(id);
        }
        assertEq(concord.taskState(id).validators, 64, "every slot taken (a 65th join reverts: Rounds.t.sol)");
        address honest = _newNode("honest", IConcordTypes.Role.Validator, STAKE);
        for (uint256 i; i < 64; ++i) {
            vm.startPrank(validators[i]);
            concord.leave(id);
            concord.requestUnbond(STAKE);
            vm.stopPrank();
        }
        vm.prank(honest);
        concord.join(id);
        assertEq(concord.memberInfo(id, honest).validatorIndex, 0, "lowest free slot");
        assertEq(concord.validatorAt(id, 0), honest);
        assertEq(concord.validatorAt(id, 1), address(0), "freed slots hold nobody");
    }

    // --- no pay for nothing -----------------------------------------------------------------

    function test_NoValidatorFeeForRoundWithoutSubmissions() public {
        uint256 id = _taskWith(_params(), 1000e18, 0, 2);
        _playRound(id, 0, 0, 0, _words(0), M1);
        assertEq(concord.balanceOf(validators[0]), 0);
        assertEq(concord.balanceOf(validators[1]), 0);
        (bytes32 d,) = concord.modelDigest(id, 1);
        assertEq(d, M1, "the model vote still counts");
        (uint256 held,,) = concord.taskEscrow(id);
        assertEq(held, 1000e18, "the whole pool returned");
    }

    /// A validator that stays joined but never commits loses its slot at the first round it
    /// skipped (no slash): it can no longer hold the commit phase open or void rounds, and it
    /// cannot take its slot back at once.
    function test_ValidatorThatDoesNotCommitLosesItsSlot() public {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 1;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        _playRound(id, 0, 0, 1, _words(1), M1); // both joined while round 0 was open: kept
        // round 1: validator 1 stays silent
        _submit(id, 1, 1, trainers[0], 10);
        _commit(id, 1, validators[0], _words(1), M1);
        _warpPast(id, 1, IConcordTypes.Phase.Commit);
        _reveal(id, 1, validators[0], _words(1), M1);
        _warpPast(id, 1, IConcordTypes.Phase.Reveal);
        vm.expectEmit(address(concord));
        emit IConcordEvents.ValidatorRemoved(id, 1, validators[1]);
        _finalizeAll(id, 1);
        assertFalse(concord.memberInfo(id, validators[1]).joined);
        assertEq(concord.taskState(id).validators, 1);
        assertEq(concord.nodeInfo(validators[1]).stake, STAKE, "not slashed");
        assertEq(concord.nodeInfo(validators[1]).joinedTasks, 0, "free to unbond");
        // round 2 closes its commit phase early with the one remaining validator
        _submit(id, 2, 2, trainers[0], 10);
        _commit(id, 2, validators[0], _words(1), M1);
        assertEq(uint8(concord.phaseOf(id, 2)), uint8(IConcordTypes.Phase.Reveal));
        vm.prank(validators[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RejoinCooldown.selector, id, validators[1], 18));
        concord.join(id); // not at once: test_RemovedValidatorRejoinsAfterTheCooldown
    }

    function test_ValidatorJoiningAnOpenRoundIsNotRemovedForIt() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2);
        _submit(id, 0, 0, trainers[0], 10);
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        _makeValidators(3);
        vm.prank(validators[2]);
        concord.join(id); // joins round 0 during its commit phase
        _voteAll(id, 0, 2, _words(1), M1);
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        _finalizeAll(id, 0);
        assertTrue(concord.memberInfo(id, validators[2]).joined, "had no full round to commit in");
    }

    // --- bounds at creation -----------------------------------------------------------------

    function test_RevertWhen_PerRoundAmountOverflowsBudgetSlot() public {
        IConcordTypes.TaskParams memory p = _params();
        p.trainerRewardPerRound = type(uint96).max;
        p.validatorFeePerRound = 1;
        vm.prank(initiator);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.PerRoundTooHigh.selector, uint256(type(uint96).max) + 1, type(uint96).max)
        );
        concord.createTask(p, 1);
    }

    function test_RevertWhen_DepositLiftsLiabilitiesAboveCap() public {
        token.mint(initiator, type(uint96).max);
        uint256 cap = type(uint96).max;
        IConcordTypes.TaskParams memory p = _params();
        uint256 id = _createTask(p, 1000e18);
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.LiabilitiesCapExceeded.selector, cap + 1000e18, cap));
        concord.createTask(p, cap);
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.LiabilitiesCapExceeded.selector, cap + 1, cap));
        concord.topUp(id, cap - 1000e18 + 1);
        vm.prank(initiator);
        concord.topUp(id, cap - 1000e18); // exactly at the cap is fine
        _assertSolvent(id);
    }

    // --- issue 21: ties give no one more ------------------------------------------------------

    /// @dev Trainers 0 and 1 honest (work 100 each), trainer 2 the attacker (work 1); the first
    ///      `bad` of `nV` revealers reject every honest submission.
    function _tieGrief(uint256 nV, uint256 bad) internal returns (uint256 id) {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 2;
        id = _taskWith(p, 1000e18, 3, nV);
        _submit(id, 0, 0, trainers[0], 100);
        _submit(id, 0, 0, trainers[1], 100);
        _submit(id, 0, 0, trainers[2], 1);
        uint256[] memory honestWords = _words(3);
        uint256[] memory badWords = _oneBit(3, 0);
        badWords[0] |= 2;
        for (uint256 i; i < nV; ++i) {
            _commit(id, 0, validators[i], i < bad ? badWords : honestWords, M1);
        }
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        for (uint256 i; i < nV; ++i) {
            _reveal(id, 0, validators[i], i < bad ? badWords : honestWords, M1);
        }
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        uint256 paid = uint256(REWARD) * 1 / 201;
        vm.expectEmit(address(concord));
        emit IConcordEvents.RoundFinalized(id, 0, M1, false, 201, REWARD - paid);
        _finalizeAll(id, 0);
    }

    /// The issue's tie grief: half of the revealers reject every honest competitor, which ties
    /// them; the attacker's 1-work submission used to take the whole reward. Now the tied work
    /// stays in the denominator: the attacker gets 1/201 of it, the rest returns to the budget.
    function test_TieGriefGivesTheAttackerOnlyItsProRataShare() public {
        uint256 id = _tieGrief(2, 1);
        assertEq(concord.balanceOf(trainers[2]), uint256(REWARD) * 1 / 201, "1 of 2 rejecting");
        assertEq(concord.balanceOf(trainers[0]), 0, "tied: not paid");
        (uint256 held, uint256 budget, uint256 reserved) = concord.taskEscrow(id);
        assertEq(held, budget + reserved);
        assertEq(held, 1000e18 - uint256(REWARD) * 1 / 201 - FEE, "the tied shares stayed with the task");
        _assertConserved();
    }

    function test_TieGriefWithTwoOfFourRejectersGivesOnlyTheProRataShare() public {
        _tieGrief(4, 2);
        assertEq(concord.balanceOf(trainers[2]), uint256(REWARD) * 1 / 201);
        assertEq(concord.balanceOf(trainers[1]), 0);
        _assertConserved();
    }

    /// A round whose every submission tied decided nothing: no validator fee.
    function test_NoValidatorFeeWhenEverySubmissionTied() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2);
        _submit(id, 0, 0, trainers[0], 10);
        _commit(id, 0, validators[0], _oneBit(1, 0), M1);
        _commit(id, 0, validators[1], _words(1), M1);
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        _reveal(id, 0, validators[0], _oneBit(1, 0), M1);
        _reveal(id, 0, validators[1], _words(1), M1);
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        _finalizeAll(id, 0);
        assertEq(concord.balanceOf(validators[0]), 0);
        assertEq(concord.balanceOf(validators[1]), 0);
        (uint256 held,,) = concord.taskEscrow(id);
        assertEq(held, 1000e18, "the whole pool returned");
    }

    // --- issue 21: removed means out for a while --------------------------------------------

    /// @dev A task whose 64 slots are held by sybils that never commit; rounds 0 and 1 run to
    ///      their deadlines (one raw submission each, no share).
    function _squatted() internal returns (uint256 id) {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 1;
        id = _taskWith(p, 1000e18, 1, 64);
        for (uint32 r; r < 2; ++r) {
            vm.prank(trainers[0]);
            concord.submit(id, r, r, _digest(trainers[0], r), bytes32(uint256(1)), 10);
            vm.warp(concord.roundInfo(id, r).revealEnd);
            if (r == 0) _finalizeAll(id, 0);
        }
    }

    /// The squat the issue describes: 64 minimum-stake sybils are removed at a finalize and
    /// rejoin in the same transaction, so an honest validator never finds a slot. Now every
    /// rejoin reverts for REJOIN_COOLDOWN_ROUNDS rounds and the honest validator takes slot 0.
    function test_RevertWhen_RemovedSybilsRejoinAtOnce() public {
        uint256 id = _squatted();
        address honest = _newNode("honest", IConcordTypes.Role.Validator, STAKE);
        vm.prank(honest);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TooManyValidators.selector, id, 64));
        concord.join(id);
        _finalizeAll(id, 1); // removes all 64
        assertEq(concord.taskState(id).validators, 0);
        for (uint256 i; i < 64; ++i) {
            vm.prank(validators[i]);
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RejoinCooldown.selector, id, validators[i], 18));
            concord.join(id);
        }
        vm.prank(honest);
        concord.join(id);
        assertEq(concord.memberInfo(id, honest).validatorIndex, 0);
        assertEq(concord.memberInfo(id, validators[0]).rejoinRound, 18);
    }

    /// After the cooldown a removed validator may come back.
    function test_RemovedValidatorRejoinsAfterTheCooldown() public {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 1;
        uint256 id = _taskWith(p, 10_000e18, 1, 2);
        _playRound(id, 0, 0, 1, _words(1), M1);
        _submit(id, 1, 1, trainers[0], 10);
        _commit(id, 1, validators[0], _words(1), M1);
        _warpPast(id, 1, IConcordTypes.Phase.Commit);
        _reveal(id, 1, validators[0], _words(1), M1);
        _warpPast(id, 1, IConcordTypes.Phase.Reveal);
        _finalizeAll(id, 1); // validator 1 removed in round 1: out until head 18
        for (uint32 r = 2; r < 18; ++r) {
            vm.prank(validators[1]);
            vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RejoinCooldown.selector, id, validators[1], 18));
            concord.join(id);
            _playRound(id, r, r, 1, _words(1), M1);
        }
        assertEq(concord.taskState(id).headRound, 18);
        vm.prank(validators[1]);
        concord.join(id);
        assertTrue(concord.memberInfo(id, validators[1]).joined);
    }

    // --- issue 21: slashed stake is burned ----------------------------------------------------

    /// Paying slashes to anyone the initiator or a validator majority can be makes framing
    /// profitable: a trainer's slash, less the rejecters' bounty, leaves the protocol.
    function test_SlashedStakeIsBurnedNotReturnedToTheBudget() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2);
        _playRound(id, 0, 0, 1, _oneBit(1, 0), M1);
        assertEq(concord.nodeInfo(trainers[0]).stake, STAKE - SLASH);
        assertEq(concord.balanceOf(validators[0]), SLASH / 4 + FEE / 2, "half the bounty and half the fee");
        assertEq(concord.burned(), SLASH / 2);
        assertEq(token.balanceOf(address(0xdEaD)), SLASH / 2);
        (uint256 held, uint256 budget, uint256 reserved) = concord.taskEscrow(id);
        assertEq(held, budget + reserved);
        assertEq(held, 1000e18 - FEE, "the slash did not join the budget");
        _assertConserved();
    }

    // --- issue 21: top-up and commit-phase bounds -------------------------------------------

    function test_RevertWhen_TopUpOfAFinishedTask() public {
        IConcordTypes.TaskParams memory p = _params();
        p.maxRounds = 2;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        vm.prank(stranger);
        concord.topUp(id, 1e18); // round 1 can still open
        _playRound(id, 0, 0, 1, _words(1), M1); // round 1, the last, opens
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NoFurtherRounds.selector, id));
        concord.topUp(id, 1e18);
    }

    /// The commit phase holds share reveals, flags and commits: shorter than about two block
    /// times lets nobody commit, so every validator would be removed though each tried.
    function test_RevertWhen_CommitPhaseTooShort() public {
        IConcordTypes.TaskParams memory p = _params();
        p.commitSeconds = 11;
        vm.prank(initiator);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.CommitPhaseTooShort.selector, 11, 12));
        concord.createTask(p, 1000e18);
        p.commitSeconds = 12;
        _createTask(p, 1000e18);
    }
}
