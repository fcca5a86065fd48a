// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ConcordFixture} from "./utils/ConcordFixture.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordEvents} from "../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";

/// @notice Settlement: slashing, bounties, validator fees, non-reveal slashes, model vote,
///         void rounds, pro-rata rewards, pagination and withdraw.
contract FinalizeTest is ConcordFixture {
    bytes32 internal constant M1 = keccak256("m1");
    bytes32 internal constant M2 = keccak256("m2");

    function _submitAll(uint256 id, uint32 round, uint256 n) internal {
        for (uint256 i; i < n; ++i) {
            _submit(id, round, round, trainers[i], uint64(10 + i));
        }
        _warpPast(id, round, IConcordTypes.Phase.Submit);
    }

    function _vote(uint256 id, uint32 round, uint256 v, uint256[] memory words, bytes32 next, bool doReveal) internal {
        _commit(id, round, validators[v], words, next);
        if (!doReveal) return;
        _warpPast(id, round, IConcordTypes.Phase.Commit);
        _reveal(id, round, validators[v], words, next);
    }

    function _commitAll(uint256 id, uint32 round, uint256[][] memory words, bytes32[] memory next) internal {
        for (uint256 v; v < words.length; ++v) {
            _commit(id, round, validators[v], words[v], next[v]);
        }
        _warpPast(id, round, IConcordTypes.Phase.Commit);
    }

    // --- the full settlement ----------------------------------------------------------------

    /// 3 trainers (work 10, 11, 12), 3 validators; trainer 1 rejected by validators 0 and 1.
    function test_FinalizeSlashesPaysBountyFeeAndRewards() public {
        uint256 id = _taskWith(_params(), 1000e18, 3, 3);
        _submitAll(id, 0, 3);
        uint256[][] memory w = new uint256[][](3);
        w[0] = _oneBit(3, 1);
        w[1] = _oneBit(3, 1);
        w[2] = _words(3);
        bytes32[] memory next = new bytes32[](3);
        next[0] = M1;
        next[1] = M1;
        next[2] = M2;
        _commitAll(id, 0, w, next);
        for (uint256 v; v < 3; ++v) {
            _reveal(id, 0, validators[v], w[v], next[v]);
        }
        uint256 budgetBefore = concord.taskState(id).budget;

        vm.expectEmit(address(concord));
        emit IConcordEvents.SubmissionRejected(id, 0, trainers[1], 1, SLASH, SLASH / 2);
        vm.expectEmit(address(concord));
        emit IConcordEvents.BountyPaid(id, 0, validators[0], SLASH / 4);
        assertTrue(concord.finalize(id, 0, 100));

        // trainers 0 and 2 share 100 pro rata 10:12
        assertEq(concord.balanceOf(trainers[0]), uint256(REWARD) * 10 / 22);
        assertEq(concord.balanceOf(trainers[2]), uint256(REWARD) * 12 / 22);
        assertEq(concord.balanceOf(trainers[1]), 0);
        assertEq(concord.nodeInfo(trainers[1]).stake, STAKE - SLASH);
        // validators 0 and 1 revealed the winning digest: fee/2 each + bounty/2 each
        assertEq(concord.balanceOf(validators[0]), FEE / 2 + SLASH / 4);
        assertEq(concord.balanceOf(validators[1]), FEE / 2 + SLASH / 4);
        assertEq(concord.balanceOf(validators[2]), 0);
        // model 1 = plurality digest
        (bytes32 d, bool fin) = concord.modelDigest(id, 1);
        assertEq(d, M1);
        assertTrue(fin);
        // budget got the reward dust; the unbountied half of the slash was burned
        uint256 dust = REWARD - uint256(REWARD) * 10 / 22 - uint256(REWARD) * 12 / 22;
        // round 1 opened right away (asyncLevel 0) and reserved its pool
        assertEq(concord.taskState(id).budget, budgetBefore + dust - REWARD - FEE);
        assertEq(concord.burned(), SLASH / 2);
        assertEq(token.balanceOf(address(0xdEaD)), SLASH / 2);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Finalized));
        assertEq(uint8(concord.phaseOf(id, 1)), uint8(IConcordTypes.Phase.Submit));
        assertEq(concord.roundInfo(id, 0).nextModelDigest, M1);
        _assertConserved();

        // balances leave by withdraw only
        uint256 bal = concord.balanceOf(validators[0]);
        uint256 before = token.balanceOf(validators[0]);
        vm.expectEmit(address(concord));
        emit IConcordEvents.Withdrawn(validators[0], bal);
        vm.prank(validators[0]);
        concord.withdraw(bal);
        assertEq(token.balanceOf(validators[0]), before + bal);
        assertEq(concord.balanceOf(validators[0]), 0);
        _assertConserved();
    }

    function test_MinorityRejectDoesNotSlash() public {
        uint256 id = _taskWith(_params(), 1000e18, 2, 3);
        _submitAll(id, 0, 2);
        uint256[][] memory w = new uint256[][](3);
        w[0] = _oneBit(2, 0);
        w[1] = _words(2);
        w[2] = _words(2);
        bytes32[] memory next = new bytes32[](3);
        next[0] = M1;
        next[1] = M1;
        next[2] = M1;
        _commitAll(id, 0, w, next);
        for (uint256 v; v < 3; ++v) {
            _reveal(id, 0, validators[v], w[v], next[v]);
        }
        _finalizeAll(id, 0);
        assertEq(concord.nodeInfo(trainers[0]).stake, STAKE);
        assertGt(concord.balanceOf(trainers[0]), 0);
    }

    /// A tie (2 of 4 revealers reject) neither pays nor slashes: one sybil validator out of two
    /// can neither shield a cheater nor frame an honest trainer; the share returns to the budget,
    /// and with no submission decided no fee is paid either.
    function test_TieIsNeitherPaidNorSlashed() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 4);
        _submitAll(id, 0, 1);
        uint256[][] memory w = new uint256[][](4);
        bytes32[] memory next = new bytes32[](4);
        for (uint256 v; v < 4; ++v) {
            w[v] = v < 2 ? _oneBit(1, 0) : _words(1);
            next[v] = M1;
        }
        _commitAll(id, 0, w, next);
        for (uint256 v; v < 4; ++v) {
            _reveal(id, 0, validators[v], w[v], next[v]);
        }
        (uint256 heldBefore,,) = concord.taskEscrow(id);
        vm.expectEmit(address(concord));
        emit IConcordEvents.SubmissionUndecided(id, 0, trainers[0], 0, 2);
        _finalizeAll(id, 0);
        assertEq(concord.nodeInfo(trainers[0]).stake, STAKE, "not slashed");
        assertEq(concord.balanceOf(trainers[0]), 0, "not paid");
        (uint256 held, uint256 budget, uint256 reserved) = concord.taskEscrow(id);
        assertEq(held, heldBefore, "nothing left the task: no fee for an undecided round");
        assertEq(held, budget + reserved);
        _assertConserved();
    }

    /// One sybil of two validators cannot shield a cheater the other rejects: not paid, and its
    /// tied work stays in the denominator (the undisputed trainer gets only its own share).
    function test_TieOfTwoDoesNotShieldACheater() public {
        uint256 id = _taskWith(_params(), 1000e18, 2, 2);
        _submitAll(id, 0, 2);
        uint256[][] memory w = new uint256[][](2);
        bytes32[] memory next = new bytes32[](2);
        w[0] = _oneBit(2, 1); // the honest validator rejects the cheater (submission 1)
        w[1] = _words(2); // the sybil accepts everything
        next[0] = M1;
        next[1] = M1;
        _commitAll(id, 0, w, next);
        _reveal(id, 0, validators[0], w[0], M1);
        _reveal(id, 0, validators[1], w[1], M1);
        _finalizeAll(id, 0);
        assertEq(concord.balanceOf(trainers[1]), 0, "cheater unpaid");
        assertEq(concord.balanceOf(trainers[0]), uint256(REWARD) * 10 / 21, "only its pro-rata share (10 of 21)");
        assertEq(concord.nodeInfo(trainers[1]).stake, STAKE, "one of two cannot slash");
    }

    function test_CommitWithoutRevealIsSlashed() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 3);
        _submitAll(id, 0, 1);
        for (uint256 v; v < 3; ++v) {
            _commit(id, 0, validators[v], _words(1), M1);
        }
        _reveal(id, 0, validators[0], _words(1), M1);
        _reveal(id, 0, validators[1], _words(1), M1);
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        vm.expectEmit(address(concord));
        emit IConcordEvents.ValidatorSlashed(id, 0, validators[2], SLASH);
        _finalizeAll(id, 0);
        assertEq(concord.nodeInfo(validators[2]).stake, STAKE - SLASH);
        assertEq(concord.balanceOf(validators[2]), 0);
        assertEq(concord.balanceOf(validators[0]), FEE / 2);
        _assertConserved();
    }

    function test_ModelTieKeepsModelAndReturnsFee() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2);
        _submitAll(id, 0, 1);
        _commit(id, 0, validators[0], _words(1), M1);
        _commit(id, 0, validators[1], _words(1), M2);
        _reveal(id, 0, validators[0], _words(1), M1);
        _reveal(id, 0, validators[1], _words(1), M2);
        uint256 budget = concord.taskState(id).budget;
        _finalizeAll(id, 0);
        (bytes32 d,) = concord.modelDigest(id, 1);
        assertEq(d, MODEL0);
        assertEq(concord.balanceOf(validators[0]), 0);
        assertEq(concord.balanceOf(trainers[0]), REWARD, "trainers are still paid");
        assertEq(concord.taskState(id).budget, budget + FEE - REWARD - FEE);
        _assertConserved();
    }

    function test_VoidRoundPaysNoOneAndKeepsModel() public {
        IConcordTypes.TaskParams memory p = _params();
        p.minValidators = 3;
        uint256 id = _taskWith(p, 1000e18, 2, 3);
        _submitAll(id, 0, 2);
        for (uint256 v; v < 3; ++v) {
            _commit(id, 0, validators[v], _oneBit(2, 0), M1);
        }
        _reveal(id, 0, validators[0], _oneBit(2, 0), M1);
        _reveal(id, 0, validators[1], _oneBit(2, 0), M1);
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        uint256 budget = concord.taskState(id).budget;
        vm.expectEmit(address(concord));
        emit IConcordEvents.RoundFinalized(id, 0, MODEL0, true, 0, REWARD + FEE);
        vm.expectEmit(address(concord));
        emit IConcordEvents.StakeBurned(id, 0, SLASH);
        assertTrue(concord.finalize(id, 0, 1));
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Void));
        (bytes32 d, bool fin) = concord.modelDigest(id, 1);
        assertEq(d, MODEL0);
        assertTrue(fin);
        assertEq(concord.nodeInfo(trainers[0]).stake, STAKE, "no trainer slash in a void round");
        assertEq(concord.balanceOf(trainers[1]), 0, "no pay");
        assertEq(concord.balanceOf(validators[0]), 0, "no fee");
        assertEq(concord.nodeInfo(validators[2]).stake, STAKE - SLASH, "withholding a reveal is slashed");
        // the pool back to the budget, then round 1 reserved its pool; the slash burned
        assertEq(concord.taskState(id).budget, budget);
        assertEq(concord.burned(), SLASH);
        _assertConserved();
    }

    function test_RoundWithNoSubmissionsAndNoValidatorsIsVoid() public {
        uint256 id = _taskWith(_params(), 1000e18, 0, 0);
        vm.warp(block.timestamp + SUBMIT_S + COMMIT_S + REVEAL_S);
        assertTrue(concord.finalize(id, 0, 1));
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Void));
        assertEq(concord.taskState(id).budget, 1000e18 - REWARD - FEE);
    }

    function test_SlashIsCappedAtStake() public {
        IConcordTypes.TaskParams memory p = _params();
        p.minTrainerStake = 10e18;
        uint256 id = _createTask(p, 1000e18);
        _makeValidators(2);
        address small = _newNode("small", IConcordTypes.Role.Trainer, 10e18);
        trainers.push(small);
        vm.prank(small);
        concord.join(id);
        for (uint256 v; v < 2; ++v) {
            vm.prank(validators[v]);
            concord.join(id);
        }
        _playRound(id, 0, 0, 1, _oneBit(1, 0), M1);
        assertEq(concord.nodeInfo(small).stake, 0);
        assertEq(concord.balanceOf(validators[0]), FEE / 2 + 10e18 / 2 / 2);
        _assertConserved();
    }

    // --- pagination -------------------------------------------------------------------------

    function test_FinalizeInPagesAcrossBitmapWords() public {
        uint256 n = 300;
        uint256 id = _taskWith(_params(), 1000e18, n, 3);
        _submitAll(id, 0, n);
        uint256[] memory w = _oneBit(n, 280);
        w[0] |= 1 << 5;
        for (uint256 v; v < 3; ++v) {
            _commit(id, 0, validators[v], w, M1);
        }
        for (uint256 v; v < 3; ++v) {
            _reveal(id, 0, validators[v], w, M1);
        }
        uint256 work;
        for (uint256 i; i < n; ++i) {
            if (i != 5 && i != 280) work += 10 + i;
        }
        uint256 calls;
        vm.expectEmit(address(concord));
        emit IConcordEvents.FinalizeProgressed(id, 0, 77, 2 * n);
        while (!concord.finalize(id, 0, 77)) {
            ++calls;
            (uint256 cursor, uint256 total) = concord.finalizeCursor(id, 0);
            assertEq(cursor, calls * 77);
            assertEq(total, 2 * n);
            assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Finalize));
            if (cursor >= n) assertEq(concord.roundInfo(id, 0).acceptedWork, work, "tally done");
        }
        assertEq(calls, 7); // ceil(600 / 77) = 8 calls
        assertEq(concord.nodeInfo(trainers[5]).stake, STAKE - SLASH);
        assertEq(concord.nodeInfo(trainers[280]).stake, STAKE - SLASH);
        assertEq(concord.balanceOf(trainers[280]), 0);
        uint256 paid;
        for (uint256 i; i < n; ++i) {
            paid += concord.balanceOf(trainers[i]);
        }
        assertLe(paid, REWARD);
        assertGt(paid, REWARD - n);
        _assertConserved();
    }

    // --- reverts ----------------------------------------------------------------------------

    function test_RevertWhen_FinalizeTooEarly() public {
        uint256 id = _taskWith(_params(), 1000e18, 1, 2);
        _submitAll(id, 0, 1);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Finalize, IConcordTypes.Phase.Commit)
        );
        concord.finalize(id, 0, 10);
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        vm.expectRevert(
            abi.encodeWithSelector(IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Finalize, IConcordTypes.Phase.Reveal)
        );
        concord.finalize(id, 0, 10);
    }

    function test_RevertWhen_FinalizeOutOfOrderOrTwice() public {
        IConcordTypes.TaskParams memory p = _params();
        p.asyncLevel = 1;
        uint256 id = _taskWith(p, 1000e18, 1, 2);
        _submit(id, 0, 0, trainers[0], 1); // closes round 0's submit; round 1 opens
        vm.warp(block.timestamp + SUBMIT_S + COMMIT_S + REVEAL_S);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WrongRound.selector, id, 0, 1));
        concord.finalize(id, 1, 10);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundNotOpened.selector, id, 2));
        concord.finalize(id, 2, 10);
        assertTrue(concord.finalize(id, 0, 10));
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.RoundAlreadySettled.selector, id, 0));
        concord.finalize(id, 0, 10);
    }

    function test_RevertWhen_FinalizeZeroItems() public {
        vm.expectRevert(IConcordErrors.ZeroMaxItems.selector);
        concord.finalize(1, 0, 0);
    }

    function test_RevertWhen_WithdrawBeyondBalance() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.InsufficientBalance.selector, stranger, 0, 1));
        concord.withdraw(1);
        vm.prank(stranger);
        vm.expectRevert(IConcordErrors.ZeroAmount.selector);
        concord.withdraw(0);
    }

    // --- fuzz -------------------------------------------------------------------------------

    /// Random verdicts from 5 validators over n submissions: each submission is slashed iff
    /// more than half of the revealers rejected it, and every token is accounted for.
    /// forge-config: default.fuzz.runs = 48
    function testFuzz_MajorityRuleAndConservation(uint256 n, uint256 seed, uint96 reward, uint16 bps, uint8 reveals)
        public
    {
        n = bound(n, 1, 40);
        reward = uint96(bound(reward, 0, 1e23));
        bps = uint16(bound(bps, 0, 10_000));
        uint256 k = bound(reveals, 0, 5);
        IConcordTypes.TaskParams memory p = _params();
        p.trainerRewardPerRound = reward;
        p.bountyBps = bps;
        uint256 id = _taskWith(p, 5e23, n, 5);
        for (uint256 i; i < n; ++i) {
            _submit(id, 0, 0, trainers[i], uint64(bound(uint256(keccak256(abi.encode(seed, "w", i))), 1, 1e12)));
        }
        uint256[][] memory w = new uint256[][](5);
        for (uint256 v; v < 5; ++v) {
            w[v] = _words(n);
            w[v][0] = uint256(keccak256(abi.encode(seed, v))) & ((uint256(1) << n) - 1);
            _commit(id, 0, validators[v], w[v], M1);
        }
        for (uint256 v; v < k; ++v) {
            _reveal(id, 0, validators[v], w[v], M1);
        }
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        _finalizeAll(id, 0);
        bool isVoid = k < p.minValidators;
        for (uint256 i; i < n; ++i) {
            uint256 rejects;
            for (uint256 v; v < k; ++v) {
                rejects += (w[v][0] >> i) & 1;
            }
            bool slashed = !isVoid && rejects * 2 > k;
            assertEq(concord.nodeInfo(trainers[i]).stake, slashed ? STAKE - SLASH : STAKE);
            if (slashed || isVoid || rejects * 2 == k) assertEq(concord.balanceOf(trainers[i]), 0);
        }
        for (uint256 v = k; v < 5; ++v) {
            assertEq(concord.nodeInfo(validators[v]).stake, STAKE - SLASH, "non-revealer slashed");
        }
        _assertConserved();
    }
}
